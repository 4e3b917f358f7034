"""``launch_app`` and :class:`Session`: the app server in a background thread, driven from Python.

>>> import embedlens as el
>>> ds = el.load_sample_dataset("digits")
>>> session = el.launch_app(ds)
>>> session.view = ds.match_tags("test")      # the page shows the test split
>>> session.selected                           # ids of the samples selected (or lassoed) in the page
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
import threading
import time
import webbrowser
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from ..core.collection import SampleCollection
from ..core.dataset import Dataset
from .guard import MAX_JSON_BODY
from .state import AppState
from ..core.errors import InvalidInputError, WrongTypeError

DEFAULT_PORT = 5151


class Session:
    """A running app: ``url``, and the page's dataset, view and selection, in sync both ways.

    Setting :attr:`view` (or :attr:`dataset`, :attr:`selected`) updates every open page at once over
    its WebSocket; selections and lassos made in the page show up in :attr:`selected` and
    :attr:`selected_labels`. The server runs in a daemon thread until :meth:`close`.

    Parameters
    ----------
    dataset:
        A dataset or view to show (or None: choose one in the page).
    port:
        TCP port; 0 picks a free one (see :attr:`port`).
    address:
        Interface to bind. Anything other than 127.0.0.1/localhost/::1 needs an ``auth_token``; without
        one a random token is made and printed with the URL.
    auto:
        Open the page: inline in a notebook, else in the default browser when there is a display (set
        ``EMBEDLENS_NO_BROWSER=1`` to never open one).
    auth_token:
        Every request and the WebSocket must carry it (``?token=``, ``Authorization: Bearer`` or
        ``X-Embedlens-Token``), on loopback too when given.
    allowed_hosts:
        More Host names the server answers to (a DNS name in front of it); it always accepts the
        loopback names, ``address``, and for a wildcard address this machine's names and addresses.
    insecure_no_token:
        Serve beyond loopback without a token: anyone who can reach the port can read every image and
        label of every dataset and change tags. Only for a network you trust completely.
    max_json_body:
        Largest JSON body accepted, in bytes (1 MiB by default); larger ones get 413.
    """

    def __init__(self, dataset: SampleCollection | None = None, port: int = DEFAULT_PORT,
                 address: str = "127.0.0.1", auto: bool = True, auth_token: str | None = None,
                 log_level: str = "warning", allowed_hosts: list[str] | None = None,
                 insecure_no_token: bool = False, max_json_body: int = MAX_JSON_BODY) -> None:
        import uvicorn

        from .server import create_app

        if dataset is not None and not isinstance(dataset, SampleCollection):
            raise WrongTypeError(f"launch_app() takes a dataset or view, got {type(dataset).__name__}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
            raise InvalidInputError(f"port must be an integer in 0..65535, got {port!r}")
        if not isinstance(address, str) or not address:
            raise InvalidInputError(f"address must be a host name or IP address, got {address!r}")
        if isinstance(max_json_body, bool) or not isinstance(max_json_body, int) or max_json_body < 1024:
            raise InvalidInputError(f"max_json_body must be an integer of at least 1024 bytes, got {max_json_body!r}")
        self.auth_token = resolve_auth_token(address, auth_token, insecure_no_token)
        self.address = address
        self._state = AppState(dataset)
        self.plots = Plots(self)
        # The server gets exactly the token that is printed; Host and Origin checks stay on everywhere.
        self._app = create_app(self._state, auth_token=self.auth_token,
                               trusted_hosts=trusted_hosts(address, allowed_hosts), max_json_body=max_json_body)
        config = uvicorn.Config(self._app, host=address, port=port, log_level=log_level, lifespan="off",
                                access_log=False, ws_ping_interval=20, ws_ping_timeout=20,
                                ws_max_size=64 * 1024)  # the page only sends pings
        self._server = uvicorn.Server(config)
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=f"embedlens-app-{port}", daemon=True)
        self._error: BaseException | None = None
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._closed = True
                self._server.should_exit = True
                reason = f": {self._error}" if self._error else " (is the port in use?)"
                raise OSError(f"could not start the embedlens app on {address}:{port}{reason}")
            time.sleep(0.02)
        self.port: int = self._server.servers[0].sockets[0].getsockname()[1]
        if auto:
            self.open()

    def _serve(self) -> None:
        try:
            self._server.run()
        except BaseException as e:  # SystemExit when the port is taken: reported by __init__
            self._error = e

    # ------------------------------------------------------------------ where

    @property
    def url(self) -> str:
        """The page's address (with ``?token=`` when the server needs a token)."""
        host = self.address
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        token = f"?token={self.auth_token}" if self.auth_token else ""
        return f"http://{host}:{self.port}/{token}"

    @property
    def server_port(self) -> int:
        return self.port

    def open(self, echo: bool = True) -> None:
        """Show the page: inline in a notebook, else in a browser (when a display is available).
        ``echo``: also print the URL (the command line prints its own line)."""
        if _in_notebook():
            from IPython.display import IFrame, display

            display(IFrame(self.url, width="100%", height=800))
            return
        if echo:
            print(f"embedlens app: {self.url}", file=sys.stderr)
        if os.environ.get("EMBEDLENS_NO_BROWSER") or not _has_display():
            return
        try:
            webbrowser.open(self.url, new=2)
        except Exception:  # no browser: the URL is printed
            pass

    show = open

    # ------------------------------------------------------------------ what the page shows

    @property
    def dataset(self) -> Dataset | None:
        return self._state.dataset

    @dataset.setter
    def dataset(self, value: Dataset | str | None) -> None:
        if value is None:
            raise InvalidInputError("session.dataset takes a dataset or a dataset name")
        self._state.set_dataset(value, origin="python")

    @property
    def view(self) -> SampleCollection | None:
        """The collection the page shows (its sidebar filters included); set it to change the page."""
        return self._state.view

    @view.setter
    def view(self, value: SampleCollection | None) -> None:
        if self._state.dataset is None:
            if value is None:
                return
            self._state.set_dataset(value, origin="python")
            return
        self._state.set_view(value, origin="python", keep_lasso=False)

    def clear_view(self) -> None:
        self.view = None

    @property
    def selected(self) -> list[str]:
        """Ids of the samples selected in the page (clicked in the grid, or lassoed in the plot)."""
        with self._state.lock:
            return list(self._state.selected)

    @selected.setter
    def selected(self, ids: Any) -> None:
        self._state.set_selected([] if ids is None else list(ids), "replace", origin="python")

    @property
    def selected_by(self) -> str | None:
        """The page (its client id) whose selection :attr:`selected` shows: the tab that changed its
        selection or view last. Each tab keeps its own; None until a page has changed one."""
        return self._state.selected_by

    @property
    def selected_labels(self) -> list[dict]:
        """Objects lassoed in an object-level plot: ``{"label_id", "sample_id", "field"}`` each."""
        with self._state.lock:
            return [dict(d) for d in self._state.selected_labels]

    def clear_selection(self) -> None:
        self._state.clear_selection(origin="python")

    def tag_selected(self, tags: str | list[str]) -> None:
        """Tag the selected samples, as the page's tag button does."""
        self._state.tag(tags, origin="python")

    def refresh(self) -> None:
        """Reload the pages (after new brain runs, tags or fields made in Python)."""
        self._state.refresh(origin="python")

    @property
    def num_pages(self) -> int:
        """How many pages are connected right now."""
        return self._state.hub.count

    # ------------------------------------------------------------------ lifetime

    def wait(self, timeout: float | None = None) -> None:
        """Block until every open page is closed (after one was opened), :meth:`close` is called, or
        ``timeout`` seconds pass; Ctrl-C returns too."""
        hub = self._state.hub
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not self._closed and (deadline is None or time.monotonic() < deadline):
                if hub.connected_once.is_set() and hub.all_gone.wait(0.2):
                    # a reload closes and reopens the socket: wait a moment before calling it closed
                    time.sleep(1.0)
                    if hub.count == 0:
                        return
                else:
                    time.sleep(0.2)
        except KeyboardInterrupt:
            return

    def close(self) -> None:
        """Stop the server (pages stay open but no longer update)."""
        if self._closed:
            return
        self._closed = True
        self._server.should_exit = True
        self._thread.join(timeout=10)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        name = self._state.dataset.name if self._state.dataset is not None else None
        n = len(self._state.view) if self._state.view is not None else 0
        return (f"<Session url={self.url!r} dataset={name!r} view={n} samples selected={len(self._state.selected)} "
                f"{'closed' if self._closed else 'running'}>")


@runtime_checkable
class LinkedPlot(Protocol):
    """What :meth:`Plots.attach` links to the app's selection: any object with

    - ``ids``: the id of every point, in plot order (sample ids; object ids for an object-level plot);
    - ``selected_ids``: read, the ids the user selected in the plot; written (by the session), the ids to
      show as selected. A ``select_ids(ids)`` method, when there is one, is called instead of writing it;
    - optionally ``register_selection_callback(callback)``: the plot calls ``callback(ids)`` whenever its
      user selects points, and the app follows at once (else call :meth:`Plots.sync`).

    ``results.visualize()``'s :class:`~embedlens.brain.plots.ScatterPlot` qualifies: it has ``ids``, and the
    session keeps its ``selected_ids`` (and a plotly figure's ``selectedpoints``) in step with the app.
    """

    ids: Sequence[str]


class Plots:
    """``session.plots``: notebook plots linked to the app's selection both ways (FiftyOne's name).

    >>> plot = results.visualize(labels="ground_truth.label")
    >>> session.plots.attach(plot)          # selecting in the page lights up the plot's points
    >>> plot.selected_ids = some_ids; session.plots.sync()   # and the plot's selection reaches the page

    A plot's ids that are samples of the app's dataset select those samples; the ids of an object-level
    plot (``link_type == "labels"``) select the samples the objects belong to.
    """

    def __init__(self, session: "Session") -> None:
        self._session = session
        self._plots: dict[str, Any] = {}
        self._pushing = False
        session._state.listeners.append(self._app_changed)

    def attach(self, plot: Any, name: str | None = None) -> str:
        """Link ``plot`` (see :class:`LinkedPlot`) under ``name`` (default ``"plot1"``, ``"plot2"``, ...)
        and show the app's selection in it now; returns the name."""
        ids = getattr(plot, "ids", None)
        if ids is None or isinstance(ids, (str, bytes)) or not all(isinstance(i, str) for i in list(ids)):
            raise WrongTypeError(f"session.plots.attach() takes a plot with .ids (a list of point ids), got "
                                 f"{type(plot).__name__}")
        if name is None:
            k = len(self._plots) + 1
            while f"plot{k}" in self._plots:
                k += 1
            name = f"plot{k}"
        if not isinstance(name, str) or not name:
            raise InvalidInputError(f"a plot's name is a non-empty string, got {name!r}")
        if name in self._plots:
            raise InvalidInputError(f"a plot named {name!r} is attached already; pop it first")
        self._plots[name] = plot
        register = _method(plot, "register_selection_callback")
        if register is not None:
            register(lambda selected, name=name: self._plot_changed(name, selected))
        self._show(plot)
        return name

    def pop(self, name: str) -> Any:
        """Detach and return the plot ``name``."""
        if name not in self._plots:
            raise InvalidInputError(f"no plot {name!r} is attached; attached: {', '.join(self._plots) or 'none'}")
        return self._plots.pop(name)

    def clear(self) -> None:
        self._plots.clear()

    def keys(self) -> list[str]:
        return list(self._plots)

    def __getitem__(self, name: str) -> Any:
        return self._plots[name]

    def __contains__(self, name: object) -> bool:
        return name in self._plots

    def __len__(self) -> int:
        return len(self._plots)

    def sync(self, name: str | None = None) -> None:
        """Send plot ``name``'s selection (default: the only attached plot) to the app."""
        if name is None:
            if len(self._plots) != 1:
                raise InvalidInputError(f"name the plot to sync; attached: {', '.join(self._plots) or 'none'}")
            name = next(iter(self._plots))
        if name not in self._plots:
            raise InvalidInputError(f"no plot {name!r} is attached; attached: {', '.join(self._plots) or 'none'}")
        self._plot_changed(name, _selected_of(self._plots[name]))

    # ------------------------------------------------------------------ both directions

    def _plot_changed(self, name: str, ids: Sequence[str] | None) -> None:
        """The plot's user selected ``ids``: the app selects their samples."""
        if self._pushing or name not in self._plots:
            return
        plot = self._plots[name]
        ids = list(ids or [])
        if getattr(plot, "link_type", "samples") == "labels":
            samples = getattr(plot, "samples", None)
            field = getattr(plot, "patches_field", None)
            if samples is None or field is None:
                raise InvalidInputError("an object-level plot needs .samples and .patches_field to select samples")
            patches = samples.to_patches(field).select(ids)
            ids = list(dict.fromkeys(patches.values("sample_id")))
        self._session.selected = ids

    def _app_changed(self, reason: str) -> None:
        if reason in ("selection", "dataset", "refresh"):
            for plot in list(self._plots.values()):
                self._show(plot)

    def _show(self, plot: Any) -> None:
        """Show the app's selection in ``plot``: its points whose id is a selected sample or object."""
        state = self._session._state
        with state.lock:
            chosen = set(state.selected) | {d["label_id"] for d in state.selected_labels}
        if getattr(plot, "link_type", "samples") == "labels" and not state.selected_labels and chosen:
            # samples selected in the page: light up their objects
            samples, field = getattr(plot, "samples", None), getattr(plot, "patches_field", None)
            if samples is not None and field is not None:
                patches = samples.to_patches(field)
                parents = dict(zip(patches.values("id"), patches.values("sample_id")))
                chosen = {i for i in plot.ids if parents.get(i) in chosen}
        ids = [i for i in plot.ids if i in chosen]
        self._pushing = True
        try:
            select = _method(plot, "select_ids")
            if select is not None:
                select(ids)
            else:
                plot.selected_ids = ids
            _mark_plotly(plot, set(ids))
        finally:
            self._pushing = False

    def __repr__(self) -> str:
        return f"<Plots {', '.join(self._plots) or 'none attached'}>"


def _method(obj: Any, name: str) -> Callable | None:
    try:
        m = getattr(obj, name)
    except AttributeError:
        return None
    return m if callable(m) else None


def _selected_of(plot: Any) -> list[str]:
    try:
        ids = plot.selected_ids
    except AttributeError:
        return []
    return list(ids or [])


def _mark_plotly(plot: Any, chosen: set[str]) -> None:
    """A plotly figure of a plot with ``trace_ids`` draws the chosen points as selected."""
    traces = getattr(plot, "trace_ids", None)
    figure = getattr(plot, "figure", None) if getattr(plot, "backend", None) == "plotly" else None
    if traces is None or figure is None:
        return
    for trace, ids in zip(figure.data, traces):
        if ids:
            trace.selectedpoints = [k for k, i in enumerate(ids) if i in chosen] if chosen else None


def launch_app(dataset: SampleCollection | None = None, view: SampleCollection | None = None,
               port: int = DEFAULT_PORT, address: str = "127.0.0.1", auto: bool = True,
               auth_token: str | None = None, allowed_hosts: list[str] | None = None,
               insecure_no_token: bool = False) -> Session:
    """Start the app on ``dataset`` (or ``view``) and return its :class:`Session`.

    As ``fiftyone.launch_app``: ``session.url``, ``session.view = ...``, ``session.selected``. The
    server binds to ``address`` (127.0.0.1 by default); binding anywhere else needs ``auth_token``
    (one is generated and printed when not given; ``insecure_no_token=True`` is the explicit opt-out).
    ``port=0`` picks a free port.
    """
    return Session(view if view is not None else dataset, port=port, address=address, auto=auto,
                   auth_token=auth_token, allowed_hosts=allowed_hosts, insecure_no_token=insecure_no_token)


#: The addresses served without a token. Deliberately these names only: any other address, even another
#: 127.x.y.z, is a choice to serve beyond the default and gets a token (and tests can exercise that path).
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def is_loopback(address: str) -> bool:
    """Whether ``address`` is one of the default loopback names (served without a token)."""
    return address in LOOPBACK


def resolve_auth_token(address: str, auth_token: str | None, insecure_no_token: bool = False) -> str | None:
    """The token a server on ``address`` needs: the one given; else, beyond the loopback interface, a new
    random one (printed), unless ``insecure_no_token``; else None."""
    if auth_token is not None:
        if not isinstance(auth_token, str) or len(auth_token) < 8 or not auth_token.isprintable():
            raise InvalidInputError("auth_token must be a string of at least 8 printable characters")
        if insecure_no_token:
            raise InvalidInputError("auth_token and insecure_no_token contradict each other: pass one")
        return auth_token
    if is_loopback(address):
        return None
    if insecure_no_token:
        print(f"embedlens: WARNING: serving on {address} WITHOUT a token: anyone who can reach this port can "
              f"see every dataset and change tags", file=sys.stderr)
        return None
    token = secrets.token_urlsafe(24)
    print(f"embedlens: binding to {address}, so every request needs this token: {token}", file=sys.stderr)
    return token


def trusted_hosts(address: str, extra: list[str] | None = None) -> list[str]:
    """Host header names a server bound to ``address`` answers to: loopback names, the address itself, for
    a wildcard address this machine's names and addresses, and ``extra``."""
    names = {"127.0.0.1", "localhost", "[::1]"}
    bound = address.strip("[]")
    if bound in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
        names |= {host, socket.getfqdn()}
        try:
            names |= {info[4][0] for info in socket.getaddrinfo(host, None)}
        except OSError:  # a host name that does not resolve: its name is still accepted
            pass
    else:
        names.add(bound)
    for extra_name in extra or []:
        if not isinstance(extra_name, str) or not extra_name.strip():
            raise InvalidInputError(f"allowed_hosts takes host names, got {extra_name!r}")
        names.add(extra_name.strip())
    return sorted({f"[{n}]" if ":" in n and not n.startswith("[") else n.lower() for n in names})


def _in_notebook() -> bool:
    ipy = sys.modules.get("IPython")
    if ipy is None:
        return False
    try:
        shell = ipy.get_ipython()
    except Exception:
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
