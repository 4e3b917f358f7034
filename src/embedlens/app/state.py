"""What one app server shows: a dataset, its current view, the page's selection, and cached plot data.

Every route and the Python :class:`~embedlens.app.session.Session` go through :class:`AppState`, which
calls the embedlens API (views, tags, brain runs) under one lock and tells the open pages what changed
(:class:`Hub`). Plot geometry leaves as bytes: points are little-endian float32 ``x, y`` pairs and
colour-by values are uint8/uint16 category codes or float32 numbers, never JSON arrays of numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import math
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from numbers import Number
from typing import Any

import numpy as np

from ..core.collection import SampleCollection
from ..core.dataset import Dataset, _check_dataset_name, list_datasets, load_dataset
from ..core.expressions import F
from ..core.labels import Label
from ..images import cached_thumbnails
from ..io.tables import table_bytes
from ..core.errors import InvalidInputError, NotFoundError, WrongTypeError

ID_RE = re.compile(r"[0-9a-f]{24}")
TAG_RE = re.compile(r"[^\x00-\x1f\x7f]{1,128}")
MAX_PAGE = 1000
#: Selections up to this size travel inside state messages; larger ones are counted only.
MAX_IDS_IN_MESSAGE = 5000
#: Boxes drawn over one grid tile; the sample modal draws all of them.
MAX_BOXES = 50
#: Closed pages' ids remembered (so that a request arriving after its page closed keeps no slot): 12 bytes
#: each, a page's requests finish within seconds of its closing.
MAX_CLOSED_PAGES = 10_000
#: What the page's "show ..." buttons do, and the brain run each needs.
ACTIONS = {"duplicates": "similarity", "unique": "uniqueness", "mistakes": "mistakenness", "hardness": "hardness",
           "novelty": "comparison"}
#: The colour-by option of a comparison run's clusters: "<brain_key> cluster".
CLUSTER_SUFFIX = " cluster"
LABEL_FIELD_TYPES = ("Classification", "Detection", "Detections")


class NotFound(NotFoundError):
    """A sample, dataset or run that the request names does not exist (HTTP 404)."""


class NameTaken(InvalidInputError):
    """A new dataset's name is already a dataset's (HTTP 409)."""


def check_ids(ids: Any, what: str = "ids") -> list[str]:
    """A list of sample/label ids (24 hex characters), de-duplicated in order; ValueError otherwise."""
    if not isinstance(ids, (list, tuple)):
        raise InvalidInputError(f"{what} must be a list of ids")
    bad = [i for i in ids if not isinstance(i, str) or not ID_RE.fullmatch(i)]
    if bad:
        raise InvalidInputError(f"{what}: {len(bad)} invalid ids (24 hex characters expected), first: {str(bad[0])[:40]!r}")
    return list(dict.fromkeys(ids))


def check_tags(tags: Any) -> list[str]:
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, (list, tuple)) or not tags:
        raise InvalidInputError("tags must be a non-empty list of strings")
    bad = [t for t in tags if not isinstance(t, str) or not TAG_RE.fullmatch(t) or not t.strip()]
    if bad:
        raise InvalidInputError(f"invalid tag {str(bad[0])[:40]!r}: 1-128 printable characters, not only spaces")
    return list(dict.fromkeys(tags))


def jsonable(value: Any) -> Any:
    """A field value as JSON: labels as dicts, arrays as a short description, NaN as None."""
    if isinstance(value, Label):
        return value.to_dict()
    if isinstance(value, np.ndarray):
        return {"_cls": "array", "shape": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def stages_of(coll: SampleCollection) -> list[dict]:
    return [s.to_dict() for s in coll._stages]


@dataclass
class RunData:
    """A visualization run, loaded once: results plus its ids as numpy arrays for fast indexing."""

    key: str
    results: Any
    keys: np.ndarray
    sample_ids: np.ndarray
    xy: bytes
    values: dict[str, tuple[dict, bytes]] = field(default_factory=dict)
    #: an object-level run's boxes, [N, 4] relative [x, y, w, h] (NaN: none), loaded when first asked for
    boxes: np.ndarray | None = None

    @property
    def count(self) -> int:
        return len(self.keys)


@dataclass
class Lasso:
    """Points selected in the plot: the grid shows their samples."""

    brain_key: str
    indices: np.ndarray  # uint32 point indices
    sample_ids: list[str]
    keys: list[str]  # the points' own ids: label ids for an object-level run
    patches_field: str | None = None


#: Marks "Python is calling" (a Session method, a test) in :data:`CLIENT`, as opposed to a page's request.
PYTHON = "python"
#: The page a request comes from (its ``X-Embedlens-Client`` id, or None when it sent none); set by the
#: server for each request, :data:`PYTHON` elsewhere.
CLIENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("embedlens_client", default=PYTHON)


@dataclass
class Slot:
    """What one page (browser tab) shows: its own view, selection, lasso and legend filter.

    Tabs never share a selection or a view: each request works on its page's slot. Python (the Session)
    reads the slot of the page that changed last, and its writes reach every slot.
    """

    view: SampleCollection | None
    selected: list[str] = field(default_factory=list)
    selected_labels: list[dict] = field(default_factory=list)
    lasso: Lasso | None = None
    #: the plot's points the legend shows (a legend class hidden or isolated): (brain_key, uint32 indices)
    shown: tuple[str, np.ndarray] | None = None
    grid_count: tuple[int, int] = (-1, 0)
    #: what ranked the view's samples when an action made it: {"name", "score"?, "groups"?}
    action: dict | None = None


class Hub:
    """The open pages (WebSocket connections); messages to them can be sent from any thread."""

    def __init__(self) -> None:
        self._clients: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self.connected_once = threading.Event()
        self.all_gone = threading.Event()

    def add(self, websocket: Any) -> str:
        client_id = uuid.uuid4().hex[:12]
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._clients[client_id] = websocket
            self.all_gone.clear()
        self.connected_once.set()
        return client_id

    def remove(self, client_id: str) -> None:
        with self._lock:
            self._clients.pop(client_id, None)
            if not self._clients:
                self.all_gone.set()

    @property
    def count(self) -> int:
        return len(self._clients)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._clients)

    def publish(self, message: dict | Callable[[str], dict], only: str | None = None) -> None:
        """Send ``message`` (or ``message(client_id)``, one per page) to every page, or to page ``only``;
        returns at once (delivery happens on the server's loop)."""
        with self._lock:
            loop, clients = self._loop, [(c, ws) for c, ws in self._clients.items() if only in (None, c)]
        if loop is None or not clients or loop.is_closed():
            return
        texts = {c: json.dumps(message(c) if callable(message) else message) for c, _ in clients}

        async def send_all() -> None:
            for client_id, ws in clients:
                try:
                    await ws.send_text(texts[client_id])
                except Exception:  # a page that went away: its handler removes it
                    self.remove(client_id)

        try:
            asyncio.run_coroutine_threadsafe(send_all(), loop)
        except RuntimeError:  # the loop stopped meanwhile
            pass


class AppState:
    """The dataset, view and selection the app shows, shared by the server's routes and the Session."""

    def __init__(self, collection: SampleCollection | None = None) -> None:
        self.lock = threading.RLock()
        self.hub = Hub()
        self.revision = 0
        #: loaded visualization runs by (dataset folder, brain key): tabs may show different datasets
        self._runs: dict[tuple[str, str], RunData] = {}
        #: the view Python set (or the one the app started with): where a new page starts
        self.base_view: SampleCollection | None = None
        #: each page's slot by client id; None: requests that name no page (scripts, tests)
        self._slots: dict[str | None, Slot] = {None: Slot(None)}
        #: the page whose slot Python reads: the one that changed its view or selection last
        self.active: str | None = None
        #: pages whose WebSocket closed (a reload or a closed tab comes back under a new id), oldest first:
        #: their slots are dropped, and a request still arriving from one keeps no slot
        self._closed: dict[str, None] = {}
        #: called with the reason after every change (the Session's linked plots listen here)
        self.listeners: list[Callable[[str], None]] = []
        if collection is not None:
            self._set_collection(collection)

    # ------------------------------------------------------------------ per-page slots

    def _key(self) -> str | None:
        client = CLIENT.get()
        return self.active if client == PYTHON else client

    def _slot(self) -> Slot:
        """The slot of the page this call comes from (Python: the page that changed last)."""
        key = self._key()
        slot = self._slots.get(key)
        if slot is None:  # a page seen for the first time starts from Python's view, nothing selected
            slot = Slot(self.base_view)
            if key not in self._closed:  # a closed page's late request: answered, but nothing is kept
                self._slots[key] = slot
        return slot

    def _targets(self) -> list[Slot]:
        """The slots a change applies to: the calling page's own; Python's changes reach every page."""
        if CLIENT.get() == PYTHON:
            self._slot()
            return list(self._slots.values())
        return [self._slot()]

    @contextlib.contextmanager
    def as_client(self, client: str | None) -> Iterator[None]:
        """Run the body as a request of page ``client`` (the server wraps every request in this)."""
        token = CLIENT.set(client)
        try:
            yield
        finally:
            CLIENT.reset(token)

    def forget_client(self, client: str) -> None:
        """A page closed (or reloaded, which gives it a new id): drop its slot. The slot Python reads (the
        page changed last) stays until another page changes something (:meth:`_activate`)."""
        with self.lock:
            self._closed[client] = None
            while len(self._closed) > MAX_CLOSED_PAGES:
                self._closed.pop(next(iter(self._closed)))
            if client != self.active:
                self._slots.pop(client, None)

    def _activate(self, client: str | None) -> None:
        """Python now reads page ``client``'s slot; the page it read before is dropped if it has closed.
        A closed page's late request does not take Python's reading away from the open pages."""
        if client in self._closed or client == self.active:
            return
        if self.active in self._closed:
            self._slots.pop(self.active, None)
        self.active = client

    @property
    def selected_by(self) -> str | None:
        """The page whose selection Python sees (None: no page has changed one)."""
        return self.active

    def _slot_property(name: str):  # noqa: N805  (a descriptor factory used in the class body)
        def get(self: "AppState") -> Any:
            with self.lock:
                return getattr(self._slot(), name)

        def set_(self: "AppState", value: Any) -> None:
            with self.lock:
                setattr(self._slot(), name, value)

        return property(get, set_, doc=f"The calling page's {name} (Python: the page that changed last).")

    view = _slot_property("view")
    selected = _slot_property("selected")
    selected_labels = _slot_property("selected_labels")
    lasso = _slot_property("lasso")
    del _slot_property

    # ------------------------------------------------------------------ dataset and view

    @property
    def dataset(self) -> Dataset | None:
        """The dataset the calling page shows (each tab may show its own; Python: the page that changed
        last, or the one Python set)."""
        with self.lock:
            view = self._slot().view
            return view._dataset if view is not None else None

    def _set_collection(self, collection: SampleCollection) -> None:
        """Show ``collection``: Python's call sets it for every page (and for pages still to come); a page's
        request for its own page only, the other tabs keeping their datasets."""
        if not isinstance(collection, SampleCollection):
            raise WrongTypeError(f"expected a dataset or view, got {type(collection).__name__}")
        if CLIENT.get() == PYTHON:
            self.base_view = collection
            self._slots = {key: Slot(collection) for key in self._slots}
            self._runs.clear()
        else:
            self._slots[self._key()] = Slot(collection)

    def require(self) -> tuple[Dataset, SampleCollection]:
        if self.dataset is None or self.view is None:
            raise NotFound("no dataset is loaded; choose one with POST /api/dataset")
        return self.dataset, self.view

    def set_dataset(self, name_or_collection: Any, origin: str | None = None) -> None:
        with self.lock:
            if isinstance(name_or_collection, str):
                if name_or_collection not in list_datasets():
                    raise NotFound(f"no dataset {name_or_collection!r}; datasets: {', '.join(list_datasets())}")
                coll: SampleCollection = load_dataset(name_or_collection)
            else:
                coll = name_or_collection
            self._set_collection(coll)
        self.notify("dataset", origin)

    def set_view(self, view: SampleCollection | None, origin: str | None = None, keep_lasso: bool = True) -> None:
        """Show ``view`` (None: the whole dataset). A view of another dataset switches datasets."""
        with self.lock:
            dataset, _ = self.require()
            if view is None:
                view = dataset.view()
            if not isinstance(view, SampleCollection):
                raise WrongTypeError(f"session.view takes a dataset or view, got {type(view).__name__}")
            if view._dataset.name != dataset.name or view._dataset.path != dataset.path:
                self._set_collection(view)
                reason = "dataset"
            else:
                if CLIENT.get() == PYTHON:
                    self.base_view = view
                for slot in self._targets():
                    slot.view = view
                    slot.action = None
                    if not keep_lasso:
                        slot.lasso, slot.shown = None, None
                reason = "view"
        self.notify(reason, origin)

    def set_view_stages(self, stages: Any, origin: str | None = None) -> None:
        """Show the view these stage dicts describe. The view is parsed, compiled and counted first: one
        that fails anywhere raises and leaves the current view as it was."""
        if not isinstance(stages, list):
            raise InvalidInputError("stages must be a list of stage objects ({'_stage': ..., 'kwargs': {...}})")
        with self.lock:
            dataset, _ = self.require()
            view = dataset.view_from_dicts(stages)
            len(view)  # runs the SQL: a view that compiles but cannot run never becomes the current one
            self.set_view(view, origin)

    def grid_points(self) -> Lasso | None:
        """The plot's points the grid shows: the lasso's, kept to the classes the legend shows; None:
        the whole view."""
        slot = self._slot()
        lasso, shown = slot.lasso, slot.shown
        if shown is None or (lasso is not None and lasso.brain_key != shown[0]):
            return lasso
        key, idx = shown
        if lasso is not None:
            idx = np.intersect1d(lasso.indices, idx, assume_unique=True)
        run = self.run(key)
        return Lasso(key, idx, list(dict.fromkeys(run.sample_ids[idx].tolist())), run.keys[idx].tolist(),
                     run.results.patches_field)

    def grid_view(self) -> SampleCollection:
        """The current view narrowed to the samples lassoed in the plot (when there is a lasso) and to the
        classes the plot's legend shows (when it hides some)."""
        _, view = self.require()
        points = self.grid_points()
        if points is None:
            return view
        pf = view._query().patches_field
        lassoed_pf = points.patches_field
        if pf is not None:
            if pf == lassoed_pf:  # objects of the same field: exactly the lassoed objects
                return view.select(points.keys)
            return view.match(F("sample_id").is_in(points.sample_ids))
        if lassoed_pf is not None:  # objects lassoed in an object-level plot: the grid shows those objects
            return view.to_patches(lassoed_pf).select(points.keys)
        return view.select(points.sample_ids)

    def grid_count(self) -> int:
        """len(grid_view()), counted once per revision: a lasso of 100k samples costs a table scan."""
        with self.lock:
            slot = self._slot()
            if slot.grid_count[0] != self.revision:
                slot.grid_count = (self.revision, self._count_grid())
            return slot.grid_count[1]

    def _count_grid(self) -> int:
        _, view = self.require()
        points = self.grid_points()
        if points is not None and not view._stages:
            # the whole dataset is in view: every lassoed point's sample (object) is in the grid, so the count
            # is the lasso's own, without a scan of the table with 100k ids
            return len(points.keys) if points.patches_field else len(points.sample_ids)
        return len(self.grid_view())

    # ------------------------------------------------------------------ messages to the pages

    def state_message(self, reason: str = "state", origin: str | None = None) -> dict:
        with self.lock:
            if self.dataset is None or self.view is None:
                return {"type": "state", "reason": reason, "origin": origin, "revision": self.revision,
                        "dataset": None}
            slot = self._slot()
            sel = self.selected
            lasso = None
            if self.lasso is not None:
                lasso = {"brain_key": self.lasso.brain_key, "points": len(self.lasso.indices),
                         "samples": len(self.lasso.sample_ids)}
            return {
                "type": "state", "reason": reason, "origin": origin, "revision": self.revision,
                "dataset": self.dataset.name, "patches": bool(self.view._is_patches),
                "grid_patches": bool(self.lasso is not None and self.lasso.patches_field) or self.view._is_patches,
                "view": {"stages": stages_of(self.view), "count": len(self.view)},
                "grid_count": self.grid_count(),
                "selected_count": len(sel), "selected": sel if len(sel) <= MAX_IDS_IN_MESSAGE else None,
                "selected_labels_count": len(self.selected_labels),
                "selected_labels": ([d["label_id"] for d in self.selected_labels]
                                    if len(self.selected_labels) <= MAX_IDS_IN_MESSAGE else None),
                "lasso": lasso,
                "legend_filter": slot.shown is not None,
                # the grid lists the view in an order of its own (sorted, shuffled, ranked by an action), not
                # in the dataset's: the page then pages a lasso through the server instead of by point order
                "ordered": bool(slot.action) or has_own_order(self.view),
                "action": {k: v for k, v in slot.action.items() if not k.startswith("_")} if slot.action else None,
                "client": self._key(),
                "selected_by": self.active,
            }

    def state_message_for(self, client: str | None, reason: str = "state", origin: str | None = None) -> dict:
        """:meth:`state_message` as page ``client`` sees it."""
        with self.as_client(client):
            return self.state_message(reason, origin)

    def notify(self, reason: str, origin: str | None = None) -> None:
        """Tell the pages: a page's own view, selection or dataset goes to that page only (other tabs keep
        theirs, and Python now reads its slot); changes from Python and to tags go to every page."""
        caller = CLIENT.get()
        with self.lock:
            self.revision += 1
            if caller != PYTHON and reason in ("selection", "view", "dataset"):
                self._activate(caller)
        for listener in list(self.listeners):
            listener(reason)
        if not self.hub.count:
            return
        if caller != PYTHON and reason in ("selection", "view", "dataset"):
            if caller is not None:
                self.hub.publish(self.state_message(reason, origin), only=caller)
            return
        self.hub.publish(lambda client: self.state_message_for(client, reason, origin))

    # ------------------------------------------------------------------ reading

    def summary(self) -> dict:
        """Fields with types and counts, tags and label values with counts, for the current view."""
        with self.lock:
            dataset, view = self.require()
            schema = view.get_field_schema()
            fields = []
            labels: dict[str, dict] = {}
            numeric = []
            for name, ftype in schema.items():
                if name in ("id", "filepath", "tags", "metadata", "sample_id"):
                    count = len(view) if name != "metadata" else len(view.exists("metadata"))
                else:
                    count = len(view.exists(name))
                fields.append({"name": name, "type": ftype, "count": count})
                if ftype in LABEL_FIELD_TYPES:
                    path = f"{name}.detections.label" if ftype == "Detections" else f"{name}.label"
                    in_view = view.count_values(path)
                    same = dataset.get_field_schema().get(name) == ftype  # not so in a patches view
                    everywhere = dataset.distinct(path) if same else list(in_view)
                    labels[name] = {"type": ftype, "path": path,
                                    "values": [{"value": v, "count": int(in_view.get(v, 0))}
                                               for v in sorted(set(everywhere) | {v for v in in_view if v is not None},
                                                               key=str)]}
                elif ftype in ("int", "float") and name != "_rowid":
                    lo, hi = view.bounds(name) if count else (None, None)
                    numeric.append({"name": name, "type": ftype, "min": jsonable(lo), "max": jsonable(hi)})
            tags_in_view = view.count_sample_tags()
            all_tags = sorted(set(dataset.count_sample_tags()) | set(tags_in_view), key=str)
            return {
                "name": dataset.name, "total": len(dataset), "count": len(view), "patches": bool(view._is_patches),
                "fields": fields, "tags": [{"tag": t, "count": int(tags_in_view.get(t, 0))} for t in all_tags],
                "labels": labels, "numeric": numeric, "stages": stages_of(view),
                "saved_views": dataset.list_saved_views(), "actions": self._action_runs(dataset),
            }

    def samples_page(self, offset: int, limit: int) -> dict:
        if offset < 0 or not 0 < limit <= MAX_PAGE:
            raise InvalidInputError(f"offset must be >= 0 and limit in 1..{MAX_PAGE}")
        with self.lock:
            grid = self.grid_view()
            total = self.grid_count()
            page = grid.skip(offset).limit(limit) if offset else grid.limit(limit)
            samples = self._tiles(page)
            return {"total": total, "offset": offset, "limit": limit, "samples": samples}

    def _tiles(self, page: SampleCollection, selected: set[str] | None = None) -> list[dict]:
        """The grid tiles of the samples (objects, in a patches view) of ``page``, in its order; ``selected``:
        the ids of the tiles to mark selected (default: those of this page's selection)."""
        schema = page.get_field_schema()
        label_fields = [n for n, t in schema.items() if t in LABEL_FIELD_TYPES]
        patches = page._is_patches
        rows = list(page)  # one query: a lasso's id filter is costly to run again per column
        sample_ids = [s["sample_id"] if patches else s.id for s in rows]
        # made now, in parallel, so the tiles' requests are file reads
        thumbs = self._thumbnails(sample_ids, self.dataset.verified_media(sample_ids))
        # an object tile is selected when the object is, a sample tile when the sample is
        if selected is None:
            selected = {d["label_id"] for d in self.selected_labels} if patches else set(self.selected)
        score = ranking(self.view)
        action = self._slot().action or {}
        groups = action.get("_groups") or {}
        if action.get("_scores"):  # an action that ranks by a score of its run (novelty)
            field, values = action["_scores"]["field"], action["_scores"]["values"]
            score = lambda sample: ({"field": field, "value": values[sample.id]}  # noqa: E731
                                    if sample.id in values else None)
        samples = []
        for s, sid, thumb in zip(rows, sample_ids, thumbs):
            chips, boxes = [], []
            for name in label_fields:
                chips.extend(_chips(name, s.get(name)))
                boxes.extend(_boxes(name, s.get(name)))
            samples.append({
                "id": s.id, "sample_id": sid, "thumb": f"/media/thumb/{sid}", "full": f"/media/full/{sid}",
                "missing": thumb is None, "tags": list(s.tags or []), "labels": chips, "boxes": boxes,
                "selected": s.id in selected, "score": score(s), "group": groups.get(s.id),
            })
        return samples

    def point_rows(self, brain_key: str, indices: np.ndarray) -> dict:
        """Grid tiles of the plot's points ``indices`` (at most :data:`MAX_PAGE`), in that order: an object's
        tile for a point of an object-level run, else its sample's.

        The page asks for these right after a lasso or a box, with the first points of the selection it
        computed itself, so that the grid shows rows before the server has taken in the whole selection
        (POST ``/api/points/{key}/lasso``, sent next); the cost is a lookup of at most ``MAX_PAGE`` ids,
        whatever the size of the selection.
        """
        idx = np.asarray(indices)
        if idx.size > MAX_PAGE:
            raise InvalidInputError(f"at most {MAX_PAGE} points per request, got {idx.size}")
        with self.lock:
            dataset, _ = self.require()
            run = self.run(brain_key)
            if idx.size and int(idx.max()) >= run.count:
                raise InvalidInputError(f"point indices must be in [0, {run.count}); got {int(idx.max())}")
            pf = run.results.patches_field
            ids = (run.keys if pf else run.sample_ids)[idx].tolist()
            coll = dataset.to_patches(pf) if pf else dataset
            unique = list(dict.fromkeys(ids))
            # which of these tiles are selected, without a set of the whole selection made (a lasso's 100k
            # ids: ~20 ms of each request); the intersection stops once it has them all
            chosen = (d["label_id"] for d in self.selected_labels) if pf else self.selected
            selected = set(unique).intersection(chosen)
            tiles = {t["id"]: t for t in self._tiles(coll.select(unique, ordered=True), selected=selected)} \
                if ids else {}
            return {"key": brain_key, "count": int(idx.size),
                    "samples": [tiles[i] for i in ids if i in tiles]}

    def sample(self, sample_id: str) -> dict:
        check_ids([sample_id], "sample id")
        with self.lock:
            dataset, _ = self.require()
            try:
                s = dataset[sample_id]
            except KeyError:
                raise NotFound(f"no sample {sample_id!r} in dataset {dataset.name!r}") from None
            schema = dataset.get_field_schema()
            boxes = [b for name, t in schema.items() if t in ("Detection", "Detections")
                     for b in _boxes(name, s.get(name), limit=10_000)]
            return {"id": s.id, "fields": {k: jsonable(v) for k, v in s.to_dict().items()}, "boxes": boxes,
                    "schema": schema, "thumb": f"/media/thumb/{s.id}", "full": f"/media/full/{s.id}"}

    def media_path(self, sample_id: str, kind: str) -> str | None:
        """The file to send for a sample: its cached thumbnail or its image; None when unreadable.

        Looked up by id in the dataset only, so a request can never name a path; and served only while
        the sample's path resolves to the file recorded when it was written (see ``Dataset.verified_media``).
        """
        if not isinstance(sample_id, str) or not ID_RE.fullmatch(sample_id):
            raise NotFound("no such sample")
        with self.lock:
            self.require()
            # an <img> sends no page header: the sample is looked up in the datasets the pages show, the
            # calling page's first (each tab may show its own dataset)
            for dataset in self._shown_datasets():
                if dataset.select([sample_id]).values("id"):
                    break
            else:
                raise NotFound("no such sample")
            path = dataset.verified_media([sample_id])[0]
            return self._thumbnails([sample_id], [path], dataset)[0] if kind == "thumb" else path

    def _shown_datasets(self) -> list[Dataset]:
        """The datasets some page shows, the calling page's first."""
        out = {str(self.dataset.path): self.dataset} if self.dataset is not None else {}
        for slot in self._slots.values():
            if slot.view is not None:
                out.setdefault(str(slot.view._dataset.path), slot.view._dataset)
        return list(out.values())

    def _thumbnails(self, sample_ids: list[str], paths: list[str | None],
                    dataset: Dataset | None = None) -> list[str | None]:
        """Cached thumbnails of the verified images ``paths`` (None stays None), made in parallel."""
        todo = [(k, (sid, p)) for k, (sid, p) in enumerate(zip(sample_ids, paths)) if p is not None]
        out: list[str | None] = [None] * len(paths)
        folder = (dataset or self.dataset).thumbnails_dir
        for (k, _), thumb in zip(todo, cached_thumbnails(folder, [item for _, item in todo])):
            out[k] = thumb
        return out

    # ------------------------------------------------------------------ selection and tags

    def set_selected(self, ids: Sequence[str], mode: str = "replace", origin: str | None = None,
                     clear_lasso: bool = False, labels: bool = False) -> list[str]:
        """Select samples (``labels``: objects of the grid, when it shows objects) by id."""
        ids = check_ids(list(ids))
        if mode not in ("replace", "add", "remove", "toggle"):
            raise InvalidInputError("mode must be one of replace, add, remove, toggle")
        if labels:
            return self._select_objects(ids, mode, origin)
        with self.lock:
            dataset, _ = self.require()
            if ids:
                found = set(dataset.select(ids).values("id"))
                missing = [i for i in ids if i not in found]
                if missing:
                    raise NotFound(f"{len(missing)} ids are not samples of dataset {dataset.name!r}, "
                                   f"first: {missing[0]!r}")
            current = dict.fromkeys(self.selected)
            if mode == "replace":
                current = dict.fromkeys(ids)
            elif mode == "add":
                current.update(dict.fromkeys(ids))
            elif mode == "remove":
                for i in ids:
                    current.pop(i, None)
            else:
                for i in ids:
                    if i in current:
                        current.pop(i)
                    else:
                        current[i] = None
            chosen = list(current)
            keep = set(chosen)
            for slot in self._targets():
                slot.selected = list(chosen)
                slot.selected_labels = [d for d in slot.selected_labels if d["sample_id"] in keep]
                if clear_lasso or CLIENT.get() == PYTHON:
                    slot.lasso = None
        self.notify("selection", origin)
        return self.selected

    def _select_objects(self, ids: list[str], mode: str, origin: str | None) -> list[str]:
        with self.lock:
            grid = self.grid_view()
            field = grid._query().patches_field
            if field is None:
                raise InvalidInputError("the grid shows samples, not objects: select samples instead")
            chosen = grid.select(ids)
            parents = dict(zip(chosen.values("id"), chosen.values("sample_id")))
            missing = [i for i in ids if i not in parents]
            if missing:
                raise NotFound(f"{len(missing)} ids are not objects of the grid, first: {missing[0]!r}")
            current = {d["label_id"]: d for d in self.selected_labels}
            new = {i: {"label_id": i, "sample_id": parents[i], "field": field} for i in ids}
            if mode == "replace":
                current = new
            elif mode == "add":
                current.update(new)
            else:
                for i in ids:
                    if i in current:
                        current.pop(i)
                    elif mode == "toggle":
                        current[i] = new[i]
            self.selected_labels = list(current.values())
            self.selected = list(dict.fromkeys(d["sample_id"] for d in self.selected_labels))
        self.notify("selection", origin)
        return self.selected

    def set_lasso(self, brain_key: str, indices: np.ndarray, origin: str | None = None) -> dict:
        """Select points of a plot: the grid then shows their samples (an object's sample, for patches)."""
        with self.lock:
            run = self.run(brain_key)
            idx = np.asarray(indices)
            if idx.size and (idx.min() < 0 or idx.max() >= run.count):
                raise InvalidInputError(f"point indices must be in [0, {run.count}); got {int(idx.max())}")
            idx = np.unique(idx).astype(np.uint32)
            if idx.size == 0:
                self.lasso = None
                self.selected, self.selected_labels = [], []
            else:
                sample_ids = list(dict.fromkeys(run.sample_ids[idx].tolist()))
                pf = run.results.patches_field
                self.lasso = Lasso(brain_key, idx, sample_ids, run.keys[idx].tolist(), pf)
                self.selected = sample_ids
                self.selected_labels = ([{"label_id": k, "sample_id": s, "field": pf}
                                         for k, s in zip(run.keys[idx].tolist(), run.sample_ids[idx].tolist())]
                                        if pf else [])
        self.notify("selection", origin)
        return {"points": int(idx.size), "samples": len(self.selected)}

    def set_shown(self, brain_key: str, indices: np.ndarray | None, origin: str | None = None) -> None:
        """The plot's points the page's legend shows (None: every class): the grid keeps to them."""
        with self.lock:
            run = self.run(brain_key)
            slot = self._slot()
            if indices is None:
                slot.shown = None
            else:
                idx = np.unique(np.asarray(indices)).astype(np.uint32)
                if idx.size and int(idx.max()) >= run.count:
                    raise InvalidInputError(f"point indices must be in [0, {run.count}); got {int(idx.max())}")
                slot.shown = (brain_key, idx)
        self.notify("selection", origin)

    def point(self, brain_key: str, index: int) -> dict:
        """Point ``index`` of a plot: its own id and its sample's (for the plot's hover card and images);
        an object's point also has its ``box``."""
        with self.lock:
            run = self.run(brain_key)
            if not 0 <= index < run.count:
                raise NotFound(f"no point {index} in run {brain_key!r} ({run.count} points)")
            out = {"index": index, "id": str(run.keys[index]), "sample_id": str(run.sample_ids[index])}
            boxes = self.object_boxes(run)
            if boxes is not None:
                out["box"] = _box_json(boxes[index])
            return out

    def export_collection(self, what: str) -> SampleCollection:
        """``"selection"``: the selected samples; ``"view"``: what the grid shows."""
        with self.lock:
            dataset, _ = self.require()
            if what == "view":
                coll = self.grid_view()
                return coll.view() if isinstance(coll, Dataset) else coll
            if what != "selection":
                raise InvalidInputError(f"export takes 'selection' or 'view', got {what!r}")
            if not self.selected:
                raise InvalidInputError("nothing is selected")
            return dataset.select(self.selected, ordered=True)

    def export_table(self, what: str, fmt: str) -> bytes:
        """The selection or the grid's samples (objects, in an object grid) as a ``"csv"`` or ``"parquet"``
        file: the columns of :func:`embedlens.io.tables.table_columns`, the same as ``export(path, "csv")``
        writes for the same collection (id, filepath, tags, label fields, scalar fields)."""
        with self.lock:
            return table_bytes(self.export_collection(what), fmt)

    def clone_to_dataset(self, name: Any, what: str) -> dict:
        """A new dataset ``name`` holding the selected samples (``what="selection"``) or the grid's
        (``"view"``), with their fields and embeddings (``SampleCollection.clone``). A name in use raises
        :class:`NameTaken`; a grid of objects cannot be cloned (clone samples instead)."""
        _check_dataset_name(name)  # Dataset's own rule, before any work
        with self.lock:
            self.require()
            if name in list_datasets():
                raise NameTaken(f"dataset {name!r} already exists: choose another name")
            coll = self.export_collection(what)
            if coll._is_patches:
                raise InvalidInputError("a grid of objects cannot be cloned into a dataset; select samples instead")
            new = coll.clone(name)
            return {"name": new.name, "count": len(new), "what": what}

    def save_view(self, name: Any, what: str, overwrite: bool = False) -> dict:
        """Save the selection or the grid's samples as the dataset's saved view ``name``."""
        if not isinstance(name, str) or not TAG_RE.fullmatch(name) or not name.strip():
            raise InvalidInputError("a view name is 1-128 printable characters")
        with self.lock:
            dataset, _ = self.require()
            coll = self.export_collection(what)
            if coll._is_patches:
                raise InvalidInputError("a view of objects cannot be saved from the page; save samples instead")
            dataset.save_view(name, coll, overwrite=overwrite)
            return {"name": name, "count": len(coll)}

    def clear_selection(self, origin: str | None = None) -> None:
        with self.lock:
            for slot in self._targets():
                slot.selected, slot.selected_labels, slot.lasso = [], [], None
        self.notify("selection", origin)

    def tag(self, tags: Any, ids: Any = None, remove: bool = False, labels: bool = False,
            origin: str | None = None) -> dict:
        """Tag (``remove``: untag) the samples ``ids`` (default: the selection); ``labels``: the selected objects."""
        tags = check_tags(tags)
        with self.lock:
            dataset, _ = self.require()
            if labels:
                by_field: dict[str, list[str]] = {}
                for d in self.selected_labels:
                    by_field.setdefault(d["field"], []).append(d["label_id"])
                if not by_field:
                    raise InvalidInputError("no labels are selected (lasso objects in a patches plot first)")
                n = 0
                for fname, label_ids in by_field.items():
                    coll = dataset.to_patches(fname).select(label_ids)
                    (coll.untag_samples if remove else coll.tag_samples)(tags)
                    n += len(label_ids)
            else:
                ids = self.selected if ids is None else check_ids(ids)
                if not ids:
                    raise InvalidInputError("nothing to tag: select samples first, or pass ids")
                coll = dataset.select(ids)
                n = len(coll)
                if n != len(ids):
                    found = set(coll.values("id"))
                    missing = [i for i in ids if i not in found]
                    raise NotFound(f"{len(missing)} ids are not samples of dataset {dataset.name!r}, "
                                   f"first: {missing[0]!r}")
                (coll.untag_samples if remove else coll.tag_samples)(tags)
        self.notify("tags", origin)
        return {"tagged" if not remove else "untagged": n, "tags": tags}

    def sort_by_similarity(self, ids: Any = None, k: int | None = None, brain_key: str | None = None,
                           reverse: bool = False, origin: str | None = None) -> dict:
        try:
            from ..brain import similarity  # noqa: F401
        except ImportError:
            raise NotImplementedError("similarity search is not available in this embedlens version") from None
        with self.lock:
            _, view = self.require()
            ids = self.selected if ids is None else check_ids(ids)
            if not ids:
                raise InvalidInputError("select samples first: they are the query")
            if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
                raise InvalidInputError(f"k must be a positive integer, got {k!r}")
            new = view.sort_by_similarity(ids, k=k, brain_key=brain_key, reverse=bool(reverse))
            slot = self._slot()
            slot.lasso, slot.view = None, new
            slot.action = {"name": "similarity", "brain_key": brain_key}
        self.notify("view", origin)
        return {"count": len(new)}

    def _action_runs(self, dataset: Dataset) -> dict[str, list[str]]:
        """For each page action, the brain runs it can use (empty: the button is off)."""
        out = {action: dataset.list_brain_runs(type=run_type) for action, run_type in ACTIONS.items()}
        # find_unique on a similarity index needs no uniqueness run; a uniqueness run, when there is one,
        # comes last so that it is the default
        out["unique"] = out["duplicates"] + out["unique"]
        return out

    def apply_action(self, name: str, brain_key: str | None = None, count: int = 100,
                     origin: str | None = None) -> dict:
        """Show the duplicates, the most unique, the likeliest mistakes, the hardest or the most novel samples.

        ``duplicates`` replaces the view by the similarity index's duplicate groups (finding them with the
        default rule when the index has none yet); ``novelty`` by the comparison run's ``top(count)``, the
        most novel target samples (``compare_datasets``), each tile showing its novelty; the others sort
        the current view by the run's score, highest first, and keep ``count``. ``brain_key`` picks the run
        (default: the newest).
        """
        if name not in ACTIONS:
            raise InvalidInputError(f"unknown action {name!r}; one of: {', '.join(ACTIONS)}")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1_000_000:
            raise InvalidInputError(f"count must be an integer in 1..1000000, got {count!r}")
        from ..brain import similarity  # noqa: F401  (registers the similarity results class)

        with self.lock:
            dataset, view = self.require()
            available = self._action_runs(dataset)[name]
            if not available:
                need = {"duplicates": "compute_similarity", "unique": "compute_uniqueness or compute_similarity",
                        "mistakes": "compute_mistakenness", "hardness": "compute_hardness",
                        "novelty": "compare_datasets"}[name]
                raise InvalidInputError(f"no brain run for {name!r} on dataset {dataset.name!r}: run {need} first")
            key = brain_key if brain_key is not None else available[-1]
            if key not in available:
                raise NotFound(f"brain run {key!r} cannot show {name!r}; runs that can: {', '.join(available)}")
            info = dataset.get_brain_info(key)
            action: dict = {"name": name, "brain_key": key}
            if info["type"] == "comparison":
                from ..brain import compare  # noqa: F401  (registers the results class)

                results = dataset.load_brain_results(key)
                new = results.top(count)
                # the tiles show the novelty that ranked them
                action["_scores"] = {"field": results.novelty_field,
                                     "values": dict(zip(results.keys, np.asarray(results.novelty, float).tolist()))}
            elif info["type"] == "similarity":
                index = dataset.load_brain_results(key)
                if name == "duplicates":
                    if index.neighbors_map is None:
                        index.find_duplicates()
                    new = index.duplicates_view()
                    action["_groups"] = duplicate_groups(index)
                else:
                    index.find_unique(min(count, index.total_index_size))
                    new = index.unique_view()
            else:
                score = info["config"][f"{info['type']}_field"]
                new = view.sort_by(score, reverse=True).limit(count)
            slot = self._slot()
            slot.lasso, slot.view, slot.action = None, new, action
        self.notify("view", origin)
        return {"action": name, "brain_key": key, "count": len(new)}

    def similarity_runs(self) -> list[str]:
        with self.lock:
            dataset, _ = self.require()
            try:
                from ..brain import similarity  # noqa: F401
            except ImportError:
                return []
            return dataset.list_brain_runs(type="similarity")

    # ------------------------------------------------------------------ plots

    def visualization_runs(self) -> list[dict]:
        with self.lock:
            dataset, _ = self.require()
            out = []
            for key in dataset.list_brain_runs(type="visualization"):
                info = dataset.get_brain_info(key)
                cfg = info.get("config", {})
                out.append({"key": key, "method": cfg.get("method"), "num_dims": cfg.get("num_dims"),
                            "patches_field": cfg.get("patches_field"), "created_at": info.get("created_at")})
            return out

    def run(self, brain_key: str) -> RunData:
        from ..brain import visualization  # noqa: F401  (registers the results class of the runs)

        with self.lock:
            dataset, _ = self.require()
            cache_key = (str(dataset.path), brain_key)
            cached = self._runs.get(cache_key)
            if cached is not None:
                return cached
            if not isinstance(brain_key, str) or not dataset.has_brain_run(brain_key):
                raise NotFound(f"no brain run {brain_key!r} on dataset {dataset.name!r}")
            if dataset.get_brain_info(brain_key)["type"] != "visualization":
                raise InvalidInputError(f"brain run {brain_key!r} is not a visualization run")
            results = dataset.load_brain_results(brain_key)
            pts = np.asarray(results.points, dtype=np.float32)[:, :2]
            run = RunData(brain_key, results, np.asarray(results.keys), np.asarray(results.sample_ids),
                          np.ascontiguousarray(pts, dtype="<f4").tobytes())
            self._runs[cache_key] = run
            return run

    def run_meta(self, brain_key: str) -> dict:
        with self.lock:
            run = self.run(brain_key)
            pts = np.asarray(run.results.points, dtype=np.float32)[:, :2]
            cfg = run.results.config
            bounds = [float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()),
                      float(pts[:, 1].max())] if len(pts) else [0.0, 0.0, 1.0, 1.0]
            return {"key": brain_key, "count": run.count, "method": cfg.get("method"),
                    "num_dims": cfg.get("num_dims"), "patches_field": cfg.get("patches_field"),
                    "bounds": bounds, "points_url": f"/api/points/{brain_key}", "dtype": "<f4",
                    "layout": "x,y interleaved", "color_fields": self.color_fields(run)}

    def color_fields(self, run: RunData) -> list[dict]:
        """What the plot can be coloured by: label fields (their label), strings and booleans, numbers,
        ``tags`` (a sample's tags joined with ", ": the split of train / production) and each comparison
        run's clusters (``"<brain_key> cluster"``, the legend naming each cluster's shares)."""
        schema = self.dataset.get_field_schema() if self.dataset is not None else {}
        pf = run.results.patches_field
        out = []
        for name, ftype in schema.items():
            if name in ("id", "filepath", "metadata", "tags"):
                continue
            if ftype in ("Classification", "Detection") or (ftype == "Detections" and name == pf):
                out.append({"path": f"{name}.label", "kind": "categorical"})
            elif ftype in ("str", "bool"):
                out.append({"path": name, "kind": "categorical"})
            elif ftype in ("int", "float"):
                out.append({"path": name, "kind": "numeric"})
        out.append({"path": "tags", "kind": "categorical"})
        if self.dataset is not None:
            out += [{"path": key + CLUSTER_SUFFIX, "kind": "categorical"}
                    for key in self.dataset.list_brain_runs(type="comparison")]
        return out

    def run_values(self, brain_key: str, path: str) -> tuple[dict, bytes]:
        """Colour-by values of every point: a JSON header and the codes or numbers as bytes."""
        with self.lock:
            run = self.run(brain_key)
            if path in run.values:
                return run.values[path]
            allowed = {f["path"]: f["kind"] for f in self.color_fields(run)}
            if path not in allowed:
                raise InvalidInputError(f"cannot colour by {path!r}; one of: {', '.join(allowed) or 'none'}")
            if path == "tags":
                vals = [", ".join(t) if t else None for t in run.results.values("tags")]
            elif path.endswith(CLUSTER_SUFFIX) and path not in self.dataset.get_field_schema():
                vals = self._cluster_values(run, path[:-len(CLUSTER_SUFFIX)])
            else:
                vals = run.results.values(path)
            header, data = encode_values(vals, allowed[path])
            header.update(key=brain_key, field=path, count=run.count)
            run.values[path] = (header, data)
            return header, data

    def _cluster_values(self, run: RunData, compare_key: str) -> list[str | None]:
        """Each point's cluster in comparison run ``compare_key``, named with its shares (the legend shows
        them): ``"cluster 03 · ref 12.0% · target 30.5% · over"``; None for samples in neither set."""
        from ..brain import compare  # noqa: F401  (registers the results class)

        results = self.dataset.load_brain_results(compare_key)
        names = {}
        for c in results.clusters:
            shift = f" · {c['shift']}" if c.get("shift") in ("over", "under") else ""
            names[int(c["cluster"])] = (f"cluster {int(c['cluster']):02d} · ref {c['reference_share']:.1%} · "
                                        f"target {c['target_share']:.1%}{shift}")
        of: dict[str, str] = {}
        if results.config["reference"].get("same_dataset"):
            of.update(zip(results.reference_ids, (names.get(int(c)) for c in results.reference_clusters)))
        of.update(zip(results.keys, (names.get(int(c)) for c in results.target_clusters)))
        return [of.get(sid) for sid in run.sample_ids.tolist()]

    def run_ids(self, brain_key: str) -> dict:
        with self.lock:
            run = self.run(brain_key)
            out = {"key": brain_key, "keys": run.keys.tolist(), "sample_ids": run.sample_ids.tolist(),
                   "patches_field": run.results.patches_field}
            boxes = self.object_boxes(run)
            if boxes is not None:
                out["boxes"] = [_box_json(b) for b in boxes]
            return out

    def object_boxes(self, run: RunData) -> np.ndarray | None:
        """The boxes of an object-level run's points ([N, 4], relative [x, y, w, h], NaN where an object has
        none), read once; None for a sample-level run. The plot draws each object as this crop of its
        sample's thumbnail (the thumbnail keeps the image's aspect, so relative boxes apply to it)."""
        pf = run.results.patches_field
        if not pf:
            return None
        with self.lock:
            if run.boxes is None:
                vals = run.results.values(f"{pf}.bounding_box")
                run.boxes = np.array([v if v else [np.nan] * 4 for v in vals], dtype=np.float64).reshape(-1, 4)
            return run.boxes

    def view_mask(self, brain_key: str) -> bytes:
        """One byte per point: 1 where the point's sample (object) is in the current view."""
        with self.lock:
            run = self.run(brain_key)
            _, view = self.require()
            if not view._stages:
                return np.ones(run.count, dtype=np.uint8).tobytes()
            if view._is_patches:
                members, ids = np.asarray(view.values("id")), run.keys
            else:
                members, ids = np.asarray(view.values("id")), run.sample_ids
            return np.isin(ids, members).astype(np.uint8).tobytes()

    def point_indices(self, brain_key: str, ids: Sequence[str] | None = None) -> np.ndarray:
        """Indices of the points whose sample (or object) id is in ``ids`` (default: the selection)."""
        with self.lock:
            run = self.run(brain_key)
            if ids is None and self.selected_labels and run.results.patches_field:
                # selected objects light up their own points, not every object of their samples
                return np.flatnonzero(np.isin(run.keys, [d["label_id"] for d in self.selected_labels])
                                      ).astype(np.uint32)
            ids = self.selected if ids is None else check_ids(list(ids))
            if not ids:
                return np.zeros(0, dtype=np.uint32)
            want = np.asarray(ids)
            mask = np.isin(run.sample_ids, want) | np.isin(run.keys, want)
            return np.flatnonzero(mask).astype(np.uint32)

    def lasso_indices(self) -> tuple[str | None, np.ndarray]:
        with self.lock:
            if self.lasso is None:
                return None, np.zeros(0, dtype=np.uint32)
            return self.lasso.brain_key, self.lasso.indices

    def refresh(self, origin: str | None = None) -> None:
        """Forget cached runs and values (after new brain runs or edits from Python) and reload the pages."""
        with self.lock:
            self._runs.clear()
            shown = {id(slot.view._dataset): slot.view._dataset for slot in self._slots.values() if slot.view is not None}
            for dataset in shown.values():
                dataset.reload()
        self.notify("refresh", origin)


#: Stages that give a view an order other than the dataset's.
ORDERING_STAGES = ("SortBy", "SortBySimilarity", "Shuffle", "Take", "ToPatches")


def has_own_order(view: SampleCollection) -> bool:
    """Whether ``view`` lists its samples in an order other than the dataset's (a sort, a shuffle, an
    ordered select, objects)."""
    for stage in view._stages:
        name = type(stage).__name__
        if name in ORDERING_STAGES or (name == "Select" and stage.kwargs.get("ordered")):
            return True
    return bool(view._is_patches)


def ranking(view: SampleCollection) -> Callable[[Any], dict | None]:
    """What ranked the view's samples, per sample: ``{"field", "value"}`` of its last sort (a field, or
    the distance of a similarity sort); None when the view is not sorted."""
    for stage in reversed(view._stages):
        name, kw = type(stage).__name__, stage.kwargs
        if name == "SortBy" and isinstance(kw.get("field_or_expr"), str):
            path = kw["field_or_expr"]

            def by_field(sample: Any, path: str = path) -> dict | None:
                value = sample.get(path.split(".")[0])
                for part in path.split(".")[1:]:
                    value = getattr(value, "get", lambda _: None)(part)
                value = jsonable(value)
                return {"field": path, "value": value} if isinstance(value, Number) else None
            return by_field
        if name == "SortBySimilarity":
            dist = dict(zip(kw["ids"], kw["distances"]))
            label = "distance" if not str(kw.get("query", "")).startswith("duplicates:") else "distance to kept"
            return lambda sample: ({"field": label, "value": dist[sample.id]} if sample.id in dist else None)
        if name in ("SortBy", "Shuffle"):
            break
    return lambda sample: None


def duplicate_groups(index: Any) -> dict[str, dict]:
    """Each member of a similarity index's duplicate groups: ``{"kept", "role", "distance"}`` (role
    "kept" with ``copies``, or "copy"), plus ``channel`` when the index's ``duplicate_groups`` names one."""
    out: dict[str, dict] = {}
    for kept, lst in (index.neighbors_map or {}).items():
        out[kept] = {"kept": kept, "role": "kept", "distance": 0.0, "copies": len(lst)}
        for dup, d in lst:
            out[dup] = {"kept": kept, "role": "copy", "distance": float(d)}
    for group in getattr(index, "duplicate_groups", None) or []:
        copies = group.get("copies") if isinstance(group, dict) else getattr(group, "copies", None)
        for copy in copies or []:
            get = copy.get if isinstance(copy, dict) else (lambda k, c=copy: getattr(c, k, None))
            if get("id") in out and get("channel") is not None:
                out[get("id")]["channel"] = str(get("channel"))
    return out


def _chips(name: str, value: Any) -> list[dict]:
    if value is None:
        return []
    cls = getattr(value, "_cls", None)
    if cls in ("Classification", "Detection"):
        conf = value.get("confidence")
        return [{"field": name, "label": value.get("label"),
                 "confidence": conf if isinstance(conf, Number) and math.isfinite(conf) else None}]
    if cls == "Detections":
        dets = value.get("detections") or []
        names = list(dict.fromkeys(d.get("label") for d in dets))
        return [{"field": name, "label": f"{len(dets)} objects" + (f": {', '.join(map(str, names[:3]))}"
                                                                     if names else ""), "count": len(dets)}]
    return []


def _box_json(box: np.ndarray) -> list[float] | None:
    return None if np.isnan(box).any() else [float(v) for v in box]


def _boxes(name: str, value: Any, limit: int = MAX_BOXES) -> list[dict]:
    """The boxes of a Detection/Detections value, for drawing over an image (relative [x, y, w, h])."""
    cls = getattr(value, "_cls", None)
    if cls == "Detection":
        dets = [value]
    elif cls == "Detections":
        dets = (value.get("detections") or [])[:limit]
    else:
        return []
    out = []
    for d in dets:
        box = d.get("bounding_box")
        if not box:
            continue
        conf = d.get("confidence")
        out.append({"field": name, "id": d.get("id"), "label": d.get("label"), "box": [float(b) for b in box],
                    "confidence": conf if isinstance(conf, Number) and math.isfinite(conf) else None})
    return out


def encode_values(values: list[Any], kind: str) -> tuple[dict, bytes]:
    """Categorical values as codes into a sorted category list (missing: ``len(categories)``), or
    numeric values as float32 (missing: NaN)."""
    n = len(values)
    if kind == "numeric":
        arr = np.array([np.nan if v is None or isinstance(v, bool) else float(v) for v in values], dtype="<f4")
        finite = arr[np.isfinite(arr)]
        header = {"kind": "numeric", "dtype": "<f4", "missing": int(n - finite.size),
                  "min": float(finite.min()) if finite.size else None,
                  "max": float(finite.max()) if finite.size else None}
        return header, arr.tobytes()
    present = [v for v in values if v is not None]
    categories = sorted({_cat(v) for v in present}, key=lambda c: (isinstance(c, str), c))
    if len(categories) >= 65535:
        raise InvalidInputError(f"{len(categories)} distinct values are too many to colour by; choose another field")
    dtype = "<u1" if len(categories) < 255 else "<u2"
    index = {c: i for i, c in enumerate(categories)}
    missing_code = len(categories)
    codes = np.fromiter((missing_code if v is None else index[_cat(v)] for v in values), dtype=dtype, count=n)
    counts = np.bincount(codes.astype(np.int64), minlength=len(categories) + 1)
    header = {"kind": "categorical", "dtype": dtype, "categories": categories,
              "counts": counts[:len(categories)].tolist(), "missing": int(counts[missing_code]),
              "missing_code": missing_code}
    return header, codes.tobytes()


def _cat(v: Any) -> Any:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float, str)):
        return v
    return str(v)
