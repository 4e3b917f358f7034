"""The app's HTTP and WebSocket routes: a thin shell over :class:`~embedlens.app.state.AppState`.

Routes parse and check their input, call the state (which calls the embedlens API), and serialise the
answer. Errors the client can fix come back as 4xx with ``{"detail": message}``; the server keeps serving.

JSON routes (under ``/api``)::

    GET  /api/datasets                      names, and the current one
    POST /api/dataset        {name}          show another dataset
    GET  /api/state                          dataset, view stages and counts, selection, lasso
    GET  /api/summary                        fields (type, count), tags and label values with counts
    GET  /api/samples?offset=&limit=         a page of the grid (current view, narrowed by the lasso)
    GET  /api/sample/{id}                    every field of one sample
    GET  /api/view  /  POST /api/view {stages}    the view as stage JSON (Stage.to_dict)
    POST /api/selection {ids, mode, labels?} select samples (replace/add/remove/toggle); labels: the
                                             ids are objects of the grid (when it shows objects)
    GET  /api/selection                      selected sample ids and objects
    POST /api/selection/clear                clear the selection and the lasso
    POST /api/tag  {tags, ids?, labels?}     tag the selection (or ids); /api/untag the same
    GET  /api/runs                           visualization runs; /api/similarity_runs
    POST /api/sort_by_similarity {ids?, k?, brain_key?, reverse?}
    POST /api/action {name, brain_key?, count?}   show duplicates / unique / mistakes / hardness / novelty
    GET  /api/points/{key}                   binary: float32 little-endian x, y interleaved
    GET  /api/points/{key}/meta              JSON header: count, bounds, colour-by fields
    GET  /api/points/{key}/ids               JSON: the point keys, their sample ids (objects: boxes)
    GET  /api/points/{key}/values?field=     JSON header of colour-by values; /values.bin the bytes
    GET  /api/points/{key}/mask              binary: uint8 per point, 1 = in the current view
    POST /api/points/{key}/lasso             binary body: uint32 point indices -> the grid shows them;
                                             answers the new state (as GET /api/state)
    GET  /api/points/{key}/lasso             binary: uint32 indices of the current lasso
    POST /api/points/{key}/indices {ids?}    binary: uint32 indices of the points of these samples
    POST /api/points/{key}/rows              binary body: uint32 point indices (<= 1000) -> the grid tiles of
                                             those points, in that order (the first rows after a lasso)
    POST /api/points/{key}/shown             binary body: a bitmask of the points the legend shows (the
                                             grid keeps to them); empty: every class
    GET  /api/points/{key}/point/{index}     JSON: a point's own id and its sample's (hover card); an object: its box
    GET  /api/export.csv?what=selection|view CSV of ids, filepaths, tags, labels and scalar fields
    GET  /api/export.parquet?what=...        the same columns as Parquet (io.tables.table_columns)
    POST /api/clone {name, what}             a new dataset of the selection or the grid (409: name taken)
    POST /api/save_view {name, what, overwrite?}   save the selection or the grid as a named view
    GET  /media/thumb/{id}, /media/full/{id} the image of a sample of the dataset (looked up by id)

Each page (tab) has its own view, selection and lasso: requests carry the page's ``X-Embedlens-Client``
id (from the WebSocket's hello), and :class:`ClientContext` runs them as that page's.
    WS   /ws                                 state messages whenever the view or selection changes
"""

from __future__ import annotations

import json
import mimetypes
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ..core.errors import EmbedlensError, InvalidInputError, NotFoundError
from .guard import MAX_BINARY_BODY, MAX_JSON_BODY, Guard
from .state import MAX_PAGE, AppState, NameTaken, NotFound

STATIC_DIR = Path(__file__).with_name("static")
CLIENT_HEADER = "x-embedlens-client"
#: Ids in one JSON body (a 1 MiB body holds about 38,000).
MAX_IDS = 50_000
MAX_OFFSET = (1 << 63) - 1  # SQLite's OFFSET is a signed 64-bit integer
#: Points in one POST /api/points/{key}/rows body (a grid page at most).
MAX_ROWS_POINTS = MAX_PAGE
_PLACEHOLDER = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">'
    '<rect width="64" height="64" fill="#2b2f36"/><path d="M18 44l10-12 8 9 6-7 8 10z" fill="#5b6270"/>'
    '<circle cx="24" cy="22" r="5" fill="#5b6270"/><path d="M10 10L54 54" stroke="#b04a4a" stroke-width="3"/>'
    '</svg>'
)
_NOT_BUILT = """<!doctype html><meta charset="utf-8"><title>embedlens</title>
<body style="font-family:sans-serif;background:#16181d;color:#ddd;padding:2em">
<h1>embedlens</h1><p>The web page is not built. Build it with <code>make install</code> (needs node and npm),
or <code>cd frontend &amp;&amp; npm ci &amp;&amp; npm run build</code>.
The API is served under <code>/api</code>.</p>"""


class ClientContext:
    """ASGI wrapper: each request runs as the page its ``X-Embedlens-Client`` header names (or as no
    page), so that the state reads and changes that page's own slot."""

    def __init__(self, app: Any, state: AppState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        client = None
        for name, value in scope.get("headers") or []:
            if name == CLIENT_HEADER.encode():
                client = value.decode("latin-1")[:64] or None
        with self.state.as_client(client):
            await self.app(scope, receive, send)


class DatasetBody(BaseModel):
    name: str = Field(min_length=1, max_length=128)


class ViewBody(BaseModel):
    stages: list[dict[str, Any]] = Field(max_length=100)


class SelectionBody(BaseModel):
    # Larger selections come from the plot, as point indices or a bitmask (POST /api/points/{key}/lasso).
    ids: list[str] = Field(default_factory=list, max_length=MAX_IDS)
    mode: Literal["replace", "add", "remove", "toggle"] = "replace"
    clear_lasso: bool = False
    labels: bool = False


class TagBody(BaseModel):
    tags: list[str] = Field(min_length=1, max_length=100)
    ids: list[str] | None = Field(default=None, max_length=MAX_IDS)
    labels: bool = False


class IdsBody(BaseModel):
    ids: list[str] | None = Field(default=None, max_length=MAX_IDS)


class SaveViewBody(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    what: Literal["selection", "view"] = "view"
    overwrite: bool = False


class CloneBody(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    what: Literal["selection", "view"] = "view"


class ActionBody(BaseModel):
    name: Literal["duplicates", "unique", "mistakes", "hardness", "novelty"]
    brain_key: str | None = Field(default=None, max_length=200)
    count: int = Field(default=100, ge=1, le=1_000_000)


class SimilarityBody(BaseModel):
    ids: list[str] | None = Field(default=None, max_length=MAX_IDS)
    k: int | None = Field(default=None, ge=1, le=MAX_OFFSET)
    brain_key: str | None = Field(default=None, max_length=200)
    reverse: bool = False


def create_app(state: AppState, auth_token: str | None = None, trusted_hosts: list[str] | None = None,
               static_dir: Path | None = None, max_json_body: int = MAX_JSON_BODY,
               max_binary_body: int = MAX_BINARY_BODY) -> Any:
    """The ASGI application serving ``state``, behind :class:`~embedlens.app.guard.Guard`.

    ``auth_token``: every request and the WebSocket must carry it (``Authorization: Bearer``,
    ``X-Embedlens-Token``, ``?token=`` or the cookie the page gets from its first ``?token=`` request),
    else 401 / 403. ``trusted_hosts``: Host header names accepted (None: any).
    ``max_json_body`` / ``max_binary_body``: larger POST bodies are refused with 413 before they are read.
    """
    app = FastAPI(title="embedlens", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.embedlens = state
    app.add_middleware(ClientContext, state=state)
    static = Path(static_dir) if static_dir is not None else STATIC_DIR

    # ------------------------------------------------------------------ errors

    async def user_error(_: Request, e: BaseException) -> JSONResponse:
        status = 404 if isinstance(e, NotFoundError) else 409 if isinstance(e, NameTaken) else 400
        return JSONResponse({"detail": str(e) or type(e).__name__}, status_code=status)

    async def not_implemented(_: Request, e: BaseException) -> JSONResponse:
        return JSONResponse({"detail": str(e) or "not implemented"}, status_code=501)

    async def bug(_: Request, e: BaseException) -> JSONResponse:
        # Starlette sends this answer, then re-raises to the Guard, which logs the traceback and keeps
        # the connection (uvicorn would drop a keep-alive connection on an exception it sees).
        return JSONResponse({"detail": "internal error (logged by the server)"}, status_code=500)

    # Only embedlens' own errors are the client's fault; anything else is a bug: 500, logged.
    app.add_exception_handler(EmbedlensError, user_error)
    app.add_exception_handler(NotImplementedError, not_implemented)
    app.add_exception_handler(Exception, bug)

    def origin(request: Request) -> str | None:
        return request.headers.get(CLIENT_HEADER)

    # ------------------------------------------------------------------ datasets, views, samples

    @app.get("/api/datasets")
    def datasets():
        from ..core.dataset import list_datasets

        return {"datasets": list_datasets(), "current": state.dataset.name if state.dataset else None}

    @app.post("/api/dataset")
    def set_dataset(body: DatasetBody, request: Request):
        state.set_dataset(body.name, origin(request))
        return state.state_message("dataset")

    @app.get("/api/state")
    def get_state():
        return state.state_message()

    @app.get("/api/summary")
    def summary():
        return state.summary()

    @app.get("/api/samples")
    def samples(offset: int = Query(0, ge=0, le=MAX_OFFSET), limit: int = Query(100, ge=1, le=1000)):
        return state.samples_page(offset, limit)

    @app.get("/api/sample/{sample_id}")
    def sample(sample_id: str):
        return state.sample(sample_id)

    @app.get("/api/view")
    def get_view():
        msg = state.state_message()
        return {"stages": msg.get("view", {}).get("stages", []), "count": msg.get("view", {}).get("count", 0)}

    @app.post("/api/view")
    def set_view(body: ViewBody, request: Request):
        state.set_view_stages(body.stages, origin(request))
        return state.state_message("view")

    # ------------------------------------------------------------------ selection and tags

    @app.get("/api/selection")
    def get_selection():
        with state.lock:
            return {"selected": list(state.selected), "selected_labels": list(state.selected_labels)}

    @app.post("/api/selection")
    def set_selection(body: SelectionBody, request: Request):
        selected = state.set_selected(body.ids, body.mode, origin(request), clear_lasso=body.clear_lasso,
                                      labels=body.labels)
        return {"selected_count": len(selected)}

    @app.post("/api/selection/clear")
    def clear_selection(request: Request):
        state.clear_selection(origin(request))
        return {"selected_count": 0}

    @app.post("/api/tag")
    def tag(body: TagBody, request: Request):
        return state.tag(body.tags, body.ids, remove=False, labels=body.labels, origin=origin(request))

    @app.post("/api/untag")
    def untag(body: TagBody, request: Request):
        return state.tag(body.tags, body.ids, remove=True, labels=body.labels, origin=origin(request))

    @app.get("/api/similarity_runs")
    def similarity_runs():
        return {"runs": state.similarity_runs()}

    @app.post("/api/sort_by_similarity")
    def sort_by_similarity(body: SimilarityBody, request: Request):
        return state.sort_by_similarity(body.ids, body.k, body.brain_key, body.reverse, origin(request))

    @app.post("/api/action")
    def action(body: ActionBody, request: Request):
        return state.apply_action(body.name, body.brain_key, body.count, origin(request))

    # ------------------------------------------------------------------ plots

    @app.get("/api/runs")
    def runs():
        return {"runs": state.visualization_runs()}

    @app.get("/api/points/{brain_key}")
    def points(brain_key: str):
        run = state.run(brain_key)
        return Response(run.xy, media_type="application/octet-stream",
                        headers={"X-Embedlens-Count": str(run.count), "Cache-Control": "no-store"})

    @app.get("/api/points/{brain_key}/meta")
    def points_meta(brain_key: str):
        return state.run_meta(brain_key)

    @app.get("/api/points/{brain_key}/ids")
    def points_ids(brain_key: str):
        return state.run_ids(brain_key)

    @app.get("/api/points/{brain_key}/values")
    def points_values(brain_key: str, field: str = Query(..., min_length=1, max_length=200)):
        header, _ = state.run_values(brain_key, field)
        return header

    @app.get("/api/points/{brain_key}/values.bin")
    def points_values_bin(brain_key: str, field: str = Query(..., min_length=1, max_length=200)):
        header, data = state.run_values(brain_key, field)
        return Response(data, media_type="application/octet-stream",
                        headers={"X-Embedlens-Dtype": header["dtype"], "X-Embedlens-Kind": header["kind"]})

    @app.get("/api/points/{brain_key}/mask")
    def points_mask(brain_key: str):
        return Response(state.view_mask(brain_key), media_type="application/octet-stream")

    @app.post("/api/points/{brain_key}/lasso")
    async def points_lasso(brain_key: str, request: Request):
        """The body: little-endian uint32 point indices, or (``X-Embedlens-Encoding: bitmask``) one bit per
        point of the plot, least significant bit first: 1M points travel as 125 kB whatever is selected."""
        body = await request.body()  # at most the Guard's binary limit
        bitmask = (request.headers.get("x-embedlens-encoding") or "").lower() == "bitmask"

        def lasso_and_state() -> dict:
            state.set_lasso(brain_key, decode_points(body, bitmask, state.run(brain_key).count), origin(request))
            return state.state_message()

        return await run_in_threadpool(lasso_and_state)

    @app.post("/api/points/{brain_key}/rows")
    async def points_rows(brain_key: str, request: Request):
        """The body: little-endian uint32 point indices (at most 1000): the grid tiles of those points, in
        that order (the page's first rows after a lasso, asked for before the lasso itself is sent)."""
        body = await request.body()
        if len(body) > 4 * MAX_ROWS_POINTS:
            raise InvalidInputError(f"at most {MAX_ROWS_POINTS} point indices per request")
        rows = await run_in_threadpool(state.point_rows, brain_key, decode_points(body, False, 0))
        return PlainJSONResponse(rows)

    @app.post("/api/points/{brain_key}/shown")
    async def points_shown(brain_key: str, request: Request):
        """The body: a bitmask over the plot's points (as for the lasso) of those the legend shows; an
        empty body shows every class again."""
        body = await request.body()

        def shown_and_state() -> dict:
            idx = decode_points(body, True, state.run(brain_key).count) if body else None
            state.set_shown(brain_key, idx, origin(request))
            return state.state_message()

        return await run_in_threadpool(shown_and_state)

    @app.get("/api/points/{brain_key}/point/{index}")
    def points_point(brain_key: str, index: int):
        return state.point(brain_key, index)

    def download(content: Any, what: str, suffix: str, media_type: str) -> Response:
        name = f"{state.dataset.name if state.dataset else 'embedlens'}-{what}.{suffix}"
        return Response(content, media_type=media_type,
                        headers={"Content-Disposition": f'attachment; filename="{_safe_filename(name)}"',
                                 "X-Content-Type-Options": "nosniff"})

    @app.get("/api/export.csv")
    def export_csv(what: Literal["selection", "view"] = "selection"):
        return download(state.export_table(what, "csv"), what, "csv", "text/csv")

    @app.get("/api/export.parquet")
    def export_parquet(what: Literal["selection", "view"] = "selection"):
        return download(state.export_table(what, "parquet"), what, "parquet", "application/vnd.apache.parquet")

    @app.post("/api/clone")
    def clone(body: CloneBody):
        return state.clone_to_dataset(body.name, body.what)

    @app.post("/api/save_view")
    def save_view(body: SaveViewBody):
        return state.save_view(body.name, body.what, body.overwrite)

    @app.get("/api/points/{brain_key}/lasso")
    def get_lasso(brain_key: str):
        key, idx = state.lasso_indices()
        if key != brain_key:
            idx = np.zeros(0, dtype=np.uint32)
        return Response(idx.astype("<u4").tobytes(), media_type="application/octet-stream")

    @app.post("/api/points/{brain_key}/indices")
    def points_indices(brain_key: str, body: IdsBody):
        idx = state.point_indices(brain_key, body.ids)
        return Response(idx.astype("<u4").tobytes(), media_type="application/octet-stream")

    # ------------------------------------------------------------------ media

    @app.get("/media/thumb/{sample_id}")
    def thumb(sample_id: str):
        return _file_or_placeholder(state.media_path(sample_id, "thumb"), thumbnail=True)

    @app.get("/media/full/{sample_id}")
    def full(sample_id: str):
        return _file_or_placeholder(state.media_path(sample_id, "full"), thumbnail=False)

    # ------------------------------------------------------------------ live updates

    @app.websocket("/ws")
    async def ws(websocket: WebSocket):
        # Host, Origin and token were checked by the Guard before the socket got here.
        await websocket.accept()
        client_id = state.hub.add(websocket)
        try:
            msg = await run_in_threadpool(state.state_message_for, client_id, "hello")
            await websocket.send_json({**msg, "type": "hello", "client_id": client_id})
            while True:
                data = await websocket.receive_json()
                if isinstance(data, dict) and data.get("type") == "ping":
                    await websocket.send_json({"type": "pong"})
        except (WebSocketDisconnect, RuntimeError, ValueError):
            pass
        finally:
            state.hub.remove(client_id)
            state.forget_client(client_id)

    # ------------------------------------------------------------------ the page

    @app.get("/")
    def index():
        page = static / "index.html"
        if not page.exists():
            return HTMLResponse(_NOT_BUILT)
        return FileResponse(page, media_type="text/html", headers={"Cache-Control": "no-store"})

    @app.get("/assets/{name}")
    def asset(name: str):
        # Built files only: a flat folder, names without separators.
        if "/" in name or "\\" in name or name.startswith("."):
            raise NotFound("no such asset")
        path = static / "assets" / name
        if not path.is_file():
            raise NotFound("no such asset")
        media = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if name.endswith(".js"):
            media = "text/javascript"
        return FileResponse(path, media_type=media, headers={"Cache-Control": "public, max-age=31536000, immutable"})

    return Guard(app, auth_token=auth_token, trusted_hosts=trusted_hosts, max_json_body=max_json_body,
                 max_binary_body=max_binary_body)


class PlainJSONResponse(JSONResponse):
    """JSON written by the json module's C encoder (numpy scalars as Python numbers), not by FastAPI's
    jsonable_encoder, which walks every value in Python: 7-15 ms of a grid page of 120 tiles, as long as the
    lookup of the page itself. For answers made of plain values (dicts, lists, str, numbers, None)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"),
                          default=_plain).encode("utf-8")


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _safe_filename(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def decode_points(body: bytes, bitmask: bool, count: int) -> np.ndarray:
    """Point indices (uint32) from a lasso body: indices, or a bitmask over the ``count`` points."""
    if bitmask:
        if len(body) != (count + 7) // 8:
            raise InvalidInputError(f"a bitmask of {count} points has {(count + 7) // 8} bytes, got {len(body)}")
        bits = np.unpackbits(np.frombuffer(body, np.uint8), count=count, bitorder="little")
        return np.flatnonzero(bits).astype(np.uint32)
    if len(body) % 4:
        raise InvalidInputError("the body must be little-endian uint32 point indices (a multiple of 4 bytes)")
    return np.frombuffer(body, dtype="<u4")


def _file_or_placeholder(path: str | None, thumbnail: bool) -> Response:
    if path is None or not os.path.isfile(path):
        return Response(_PLACEHOLDER, media_type="image/svg+xml", headers={"X-Embedlens-Missing": "1"})
    media = "image/jpeg" if thumbnail else (mimetypes.guess_type(path)[0] or "")
    if not media.startswith("image/") or media == "image/svg+xml":
        media = "application/octet-stream"  # never let a dataset file be run as a page or a script
    return FileResponse(path, media_type=media, headers={"Cache-Control": "private, max-age=60",
                                                         "X-Content-Type-Options": "nosniff"})
