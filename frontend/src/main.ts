// The page: wires the sidebar, the grid and the plot to the server, and keeps them in sync with it.

import "./style.css";
import {
  ApiError,
  connectLive,
  getBinary,
  getClientId,
  getJSON,
  requestHeaders,
  postBinary,
  postForBinary,
  postJSON,
  setClientId,
  type RunInfo,
  type Stage,
  type StateMessage,
  type Summary,
  type Tile,
} from "./api";
import { Grid, type PageSource } from "./grid";
import { Modal } from "./modal";
import { Plot } from "./plot";
import { Sidebar } from "./sidebar";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

let state: StateMessage | null = null;
let baseStages: Stage[] = [];
/** Ids of the selected tiles (samples, or objects in an object grid) when the page knows them (small
 * selections); null: see the server. */
let selected: Set<string> | null = new Set();
let selectedCount = 0;
let summary: Summary | null = null;
let statusTimer = 0;
let similarityRuns = 0;
/** Answers to older selection requests are dropped: only the latest selection reaches the grid. */
let selectionSeq = 0;
let restored = false;
const timings = { gridUpdated: 0, lassoSent: 0, lassoAnswered: 0, rowsAnswered: 0, rowsAsked: 0, rowsFetched: 0 };
/** The selection made in the plot, on its way to the server: what needs the server's selection (tag,
 * export, similarity...) waits for it. */
let selectionPosted: Promise<unknown> = Promise.resolve();

function selectionKeys(msg: StateMessage): Set<string> | null {
  const ids = msg.grid_patches ? msg.selected_labels : msg.selected;
  return ids ? new Set(ids) : null;
}

function status(message: string, isError = false): void {
  const el = $("status");
  el.textContent = message;
  el.classList.toggle("error", isError);
  window.clearTimeout(statusTimer);
  statusTimer = window.setTimeout(() => (el.textContent = ""), isError ? 8000 : 3000);
}

function fail(e: unknown): void {
  const msg = e instanceof ApiError ? e.message : String((e as Error)?.message ?? e);
  status(msg, true);
  console.error(e);
}

// ------------------------------------------------------------------ components

const grid = new Grid($("grid-scroll"), $("grid-spacer"), {
  select: (tile, additive) => void selectTile(tile, additive),
  open: (tile) => void modal.show(tile),
  error: fail,
});

const modal = new Modal(
  $("modal"),
  { title: $("modal-title"), image: $("modal-image"), fields: $("modal-fields"), close: $("modal-close"),
    prev: $("modal-prev"), next: $("modal-next"), tag: $<HTMLInputElement>("modal-tag"),
    tagButton: $("modal-tag-btn"), select: $("modal-select"), selected: $("modal-selected") },
  {
    neighbour: (tile, step) => {
      const next = grid.neighbour(tile.id, step);
      if (next) grid.focusId(next.id); // the grid's focus follows the modal
      return next;
    },
    error: fail,
    tag: (tile, tag) => tagOne(tile, tag),
    toggle: (tile) => selectTile(tile, true),
    isSelected: (tile) => (selected ? selected.has(tile.id) : false),
  },
);

const plot = new Plot($<HTMLCanvasElement>("plot-canvas"), $("plot-empty"), $("legend"), {
  selected: () => sendSelection(),
  shown: () => void sendShown(),
  open: (i) => void openPoint(i),
  counts: (n, live) => {
    if (live) $("selection-count").textContent = `${n.toLocaleString()} in the lasso`;
  },
  error: fail,
}, (i, tip) => void describePoint(i, tip));

const sidebar = new Sidebar(
  {
    dataset: $<HTMLSelectElement>("dataset-select"),
    viewInfo: $("view-info"),
    stages: $("view-stages"),
    reset: $<HTMLButtonElement>("reset-view"),
    tags: $("tag-filters"),
    labels: $("label-filters"),
    numeric: $("numeric-filters"),
    fields: $("field-list"),
    sortField: $<HTMLSelectElement>("sort-field"),
    sortReverse: $<HTMLInputElement>("sort-reverse"),
    limit: $<HTMLInputElement>("view-limit"),
  },
  {
    apply: (stages) => void setView([...baseStages, ...stages]),
    dataset: (name) => void postJSON<StateMessage>("/api/dataset", { name }).then((m) => applyFresh(m), fail),
    reset: () => {
      baseStages = [];
      sidebar.clearFilters();
      void setView([]);
    },
    removeStage: (index) => {
      // What remains becomes the base view: the sidebar's controls start again from it.
      const stages = [...baseStages, ...sidebar.stages()];
      stages.splice(index, 1);
      baseStages = stages;
      sidebar.clearFilters();
      void setView(stages);
    },
  },
);

// ------------------------------------------------------------------ state from the server

function showCounts(msg: StateMessage): void {
  state = msg;
  renderCounts(msg.grid_count ?? 0, msg.lasso?.points ?? null, msg.selected_count ?? 0, msg.selected_labels_count ?? 0);
}

/** The header's and the selection's counts: `lassoPoints` null when the grid is the view, not a lasso. */
function renderCounts(gridCount: number, lassoPoints: number | null, samples: number, objects: number): void {
  selectedCount = samples;
  const view = state?.view?.count ?? 0;
  $("counts").textContent = state?.dataset
    ? `${state.dataset} · ${gridCount.toLocaleString()} shown` +
      (lassoPoints !== null ? ` (lasso: ${lassoPoints.toLocaleString()} points)` : ` of ${view.toLocaleString()} in view`)
    : "no dataset";
  $("selection-count").textContent = objects
    ? `${objects.toLocaleString()} objects selected`
    : selectedCount ? `${selectedCount.toLocaleString()} selected` : "no selection";
  const why = selectedCount ? "" : "select samples first: lasso or box in the plot, or click tiles";
  for (const id of ["tag-btn", "untag-btn", "clear-btn", "similarity-btn"]) setDisabled($<HTMLButtonElement>(id), why);
  if (!$("similarity-section").hidden || !why) {
    setDisabled($<HTMLButtonElement>("similarity-btn"), why || (similarityRuns ? "" : "needs a similarity index: compute_similarity(...)"));
  }
}

/** Enable `btn`, or disable it and say why on hover (`why` non-empty). */
function setDisabled(btn: HTMLButtonElement, why: string): void {
  if (btn.dataset.title0 === undefined) btn.dataset.title0 = btn.title;
  btn.disabled = !!why;
  btn.title = why ? `${btn.dataset.title0 ? btn.dataset.title0 + " — " : ""}disabled: ${why}` : btn.dataset.title0;
}

async function loadSummary(): Promise<void> {
  summary = await getJSON<Summary>("/api/summary");
  sidebar.render(summary, baseStages, state?.action ?? null);
  for (const btn of document.querySelectorAll<HTMLButtonElement>("#actions button[data-action]")) {
    const runs = summary.actions[btn.dataset.action as keyof Summary["actions"]] ?? [];
    btn.dataset.title0 = `${btn.dataset.help}` + (runs.length ? ` (${runs[runs.length - 1]})` : "");
    setDisabled(btn, runs.length ? "" : `no brain run for it yet: run ${btn.dataset.needs} first`);
  }
}

/** The visualization runs, and the plot of the asked (or first) one; `opened` is called once its points are
 * drawn (or there is nothing to draw). */
async function loadRuns(url: URLSearchParams | null = null, opened: () => void = () => {}): Promise<void> {
  const { runs } = await getJSON<{ runs: RunInfo[] }>("/api/runs");
  const sel = $<HTMLSelectElement>("run-select");
  const previous = plot.key;
  sel.replaceChildren(
    ...runs.map((r) => new Option(`${r.key} (${r.method}${r.patches_field ? `, ${r.patches_field}` : ""})`, r.key)),
  );
  if (!runs.length) {
    $("plot-empty").textContent = "No visualization runs: compute one with el.compute_visualization(..., brain_key=...)";
    return opened();
  }
  const asked = url?.get("run");
  const key = asked && runs.some((r) => r.key === asked) ? asked
    : runs.some((r) => r.key === previous) ? previous! : runs[0].key;
  sel.value = key;
  await openRun(key, url?.get("color") ?? undefined, url?.get("size") ?? undefined, opened);
  if (url?.get("hide")) {
    try {
      plot.hideByName(JSON.parse(url.get("hide")!));
    } catch {
      /* a hand-edited address: show every class */
    }
  }
  const points = url?.get("sel") ? decodeRanges(url.get("sel")!, plot.count) : null;
  if (points?.length) {
    plot.setSelection(points);
    await sendSelection();
  }
}

async function loadSimilarity(): Promise<void> {
  const { runs } = await getJSON<{ runs: string[] }>("/api/similarity_runs");
  $("similarity-section").hidden = runs.length === 0;
  similarityRuns = runs.length;
  $<HTMLSelectElement>("similarity-run").replaceChildren(...runs.map((r) => new Option(r, r)));
}

async function openRun(key: string, color?: string, size?: string, opened: () => void = () => {}): Promise<void> {
  await plot.open(key);
  opened();
  const colorSel = $<HTMLSelectElement>("color-select");
  const fields = plot.meta?.color_fields ?? [];
  colorSel.replaceChildren(new Option("(no colour)", ""), ...fields.map((f) => new Option(f.path, f.path)));
  const sizeSel = $<HTMLSelectElement>("size-select");
  sizeSel.replaceChildren(
    new Option("(one size)", ""),
    ...fields.filter((f) => f.kind === "numeric").map((f) => new Option(`size: ${f.path}`, f.path)),
  );
  const first = fields.find((f) => f.kind === "categorical");
  const want = color !== undefined && (color === "" || fields.some((f) => f.path === color)) ? color : first ? first.path : "";
  colorSel.value = want;
  await plot.colorBy(want);
  if (size && fields.some((f) => f.path === size && f.kind === "numeric")) {
    sizeSel.value = size;
    await plot.sizeBy(size);
  }
  // the legend starts with every class shown: the grid too
  if (state?.legend_filter) await sendShown();
  await updateMask();
  await syncPlotSelection();
  writeUrl();
}

async function updateMask(): Promise<void> {
  if (!plot.key) return;
  const buf = await getBinary(`/api/points/${encodeURIComponent(plot.key)}/mask`);
  const stages = state?.view?.stages ?? [];
  const ranked = !!state?.action || ["Limit", "Select", "SortBySimilarity", "Take"].includes(stages[stages.length - 1]?._stage);
  await plot.setMask(new Uint8Array(buf), ranked);
}

/** Light up the selection in the plot when it changed elsewhere (tiles clicked, Python): the lasso's own
 * points, or the points of what is selected. */
async function syncPlotSelection(): Promise<void> {
  if (!plot.key || !state) return;
  const key = plot.key;
  let idx: ArrayBuffer;
  const lasso = state.lasso;
  const objects = state.selected_labels_count ?? 0;
  // the lasso's own points while the selection is still the lasso; else the points of what is selected
  if (lasso && lasso.brain_key === key && (objects ? objects === lasso.points : selectedCount === lasso.samples)) {
    idx = await getBinary(`/api/points/${encodeURIComponent(key)}/lasso`);
  } else if (selectedCount) {
    idx = await postForBinary(`/api/points/${encodeURIComponent(key)}/indices`, {});
  } else {
    idx = new ArrayBuffer(0);
  }
  if (plot.key === key) plot.setSelection(new Uint32Array(idx));
}

/** The datasets to choose from, and this tab's. */
async function loadDatasets(): Promise<void> {
  const { datasets, current } = await getJSON<{ datasets: string[]; current: string | null }>("/api/datasets");
  sidebar.setDatasets(datasets, current);
}

/** A whole new state (first message, another dataset, refresh): reload everything. */
async function applyFresh(msg: StateMessage): Promise<void> {
  showCounts(msg);
  setGridPoints(null);
  baseStages = msg.view?.stages ?? [];
  sidebar.clearFilters();
  selected = selectionKeys(msg);
  if (!msg.dataset) return loadDatasets();
  const url = restored ? null : new URLSearchParams(location.search);
  restored = true;
  const dataset = url?.get("dataset");
  if (dataset && dataset !== msg.dataset) {
    // this tab's own dataset, from its address (the server starts a new tab on Python's)
    try {
      msg = await postJSON<StateMessage>("/api/dataset", { name: dataset });
      showCounts(msg);
      baseStages = msg.view?.stages ?? [];
      selected = selectionKeys(msg);
    } catch (e) {
      fail(e);
    }
  }
  if (url?.get("view")) {
    // this tab's own view, from its address
    try {
      const m = await postJSON<StateMessage>("/api/view", { stages: JSON.parse(url.get("view")!) });
      showCounts(m);
      baseStages = m.view?.stages ?? [];
    } catch (e) {
      fail(e);
    }
  }
  // The grid's page and the plot's points are asked for first, the sidebar's figures once the points are
  // drawn: the server answers one request at a time, and the summary of a million samples takes ~1.3 s.
  let opened: () => void = () => {};
  const pointsDrawn = new Promise<void>((resolve) => (opened = resolve));
  const plotting = loadRuns(url, opened).finally(() => opened());
  await Promise.all([
    refreshGrid(false),
    plotting,
    pointsDrawn.then(() => Promise.all([loadDatasets(), loadSummary(), loadSimilarity()])),
  ]);
  writeUrl();
}

async function refreshGrid(keepScroll: boolean): Promise<void> {
  await grid.reset(keepScroll);
  timings.gridUpdated = performance.now();
}

function onLive(msg: StateMessage): void {
  if (msg.type === "hello") {
    setClientId(msg.client_id ?? "");
    void applyFresh(msg)
      .catch(fail)
      .finally(() => ((window as any).__embedlens.ready = true));
    return;
  }
  if (msg.type !== "state") return;
  const own = msg.origin !== null && msg.origin === getClientId();
  showCounts(msg);
  if (own) return; // this page made the change and has updated itself
  const run = async () => {
    switch (msg.reason) {
      case "dataset":
      case "refresh":
        await applyFresh(msg);
        break;
      case "view":
        setGridPoints(null);
        baseStages = msg.view?.stages ?? [];
        sidebar.clearFilters();
        await Promise.all([loadSummary(), refreshGrid(false), updateMask()]);
        writeUrl();
        break;
      case "selection":
        setGridPoints(null);
        selected = selectionKeys(msg);
        await Promise.all([refreshGrid(true), syncPlotSelection()]);
        break;
      case "tags":
        await Promise.all([loadSummary(), refreshGrid(true)]);
        break;
    }
    (window as any).__embedlens.revision = msg.revision;
  };
  run().catch(fail);
}

// ------------------------------------------------------------------ actions

async function setView(stages: Stage[]): Promise<void> {
  try {
    const msg = await postJSON<StateMessage>("/api/view", { stages });
    showCounts(msg);
    setGridPoints(null);
    await Promise.all([loadSummary(), refreshGrid(false), updateMask()]);
    writeUrl();
  } catch (e) {
    fail(e);
    await loadSummary().catch(() => undefined);
  }
}

async function selectTile(tile: Tile, additive: boolean): Promise<void> {
  try {
    const id = tile.id; // an object's own id in an object grid
    if (!additive || selected === null) {
      if (!additive) selected = new Set([id]);
    } else if (selected.has(id)) selected.delete(id);
    else selected.add(id);
    if (selected) grid.markSelected((key) => selected!.has(key));
    await selectionPosted;
    const res = await postJSON<{ selected_count: number }>("/api/selection", {
      ids: [id],
      mode: additive ? "toggle" : "replace",
      labels: tile.id !== tile.sample_id,
    });
    selectedCount = res.selected_count;
    if (selected === null || grid.ownSource) {
      setGridPoints(null);
      await refreshGrid(true);
    }
    const msg = await getJSON<StateMessage>("/api/state");
    showCounts(msg);
    await syncPlotSelection();
  } catch (e) {
    fail(e);
  }
}

// A selection travels as uint32 indices, or as one bit per point of the plot when that is smaller (more
// than 1 point in 32 selected): a lasso of 500k of 1M points is 125 kB instead of 2 MB.
function selectionBody(): [ArrayBufferView, Record<string, string>] {
  return plot.selCount * 32 <= plot.count
    ? [plot.selectedIndices(), {}] : [plot.selectedBits(), { "X-Embedlens-Encoding": "bitmask" }];
}

/** The points the grid shows for the plot's selection: the selected ones of the classes the legend shows
 * (the plot selects only points in the view). */
function gridPointsNow(): Uint32Array {
  const idx = plot.selectedIndices();
  const codes = plot.codes;
  const hidden = plot.hidden;
  return codes && hidden.size ? idx.filter((i) => !hidden.has(codes[i])) : idx;
}

/** Whether the grid can list the plot's selection by point, in the plot's order: a view in the dataset's
 * order (not sorted, ranked or of objects), so that the order is the one the server would give. */
function gridByPoints(): boolean {
  return !!plot.key && !!state?.dataset && !state.ordered && !state.patches && plot.selCount > 0;
}

/** Pages of the grid straight from point indices (POST /api/points/{key}/rows): a lookup of a page of
 * ids, whatever the size of the selection. */
function pointsSource(key: string, indices: Uint32Array): PageSource {
  return async (offset, limit) => {
    const part = indices.subarray(offset, offset + limit);
    if (!offset) timings.rowsAsked = performance.now();
    const res = part.length
      ? await postBinary<{ samples: Tile[] }>(`/api/points/${encodeURIComponent(key)}/rows`, part)
      : { samples: [] };
    if (!offset) timings.rowsFetched = performance.now();
    for (const t of res.samples) t.selected = true; // they are the selection
    return { total: indices.length, offset, limit, samples: res.samples };
  };
}

/** The grid lists these points of the plot (null: the server's grid). */
function setGridPoints(key: string | null, indices: Uint32Array | null = null): void {
  grid.setSource(key && indices ? pointsSource(key, indices) : null);
}

/** Show the plot's selection in the grid at once, from the points the page holds: counts computed here,
 * the first rows asked for by point index. */
async function showSelectionByPoints(key: string): Promise<void> {
  const indices = gridPointsNow();
  setGridPoints(key, indices);
  const objects = plot.meta?.patches_field ? plot.selCount : 0;
  renderCounts(indices.length, plot.selCount, plot.selCount, objects);
  await refreshGrid(false);
  timings.rowsAnswered = timings.gridUpdated;
}

async function sendSelection(): Promise<void> {
  const key = plot.key;
  if (!key) return;
  const seq = ++selectionSeq;
  const direct = gridByPoints();
  // what needs the server's selection (tag, export...) waits for this one from now on, also while the grid's
  // rows come first; settled without a request when a newer selection or a clear takes over
  let posted: (p: Promise<unknown>) => void = () => {};
  selectionPosted = new Promise((resolve) => (posted = (p) => resolve(p.catch(() => undefined))));
  try {
    if (direct) {
      await showSelectionByPoints(key);
      // the frame showing the rows is painted first: the address and the selection's body take a pass over
      // every point (tens of ms at a million), which would hold that frame back
      if (seq === selectionSeq) await afterPaint();
      if (seq === selectionSeq) writeUrl();
    } else setGridPoints(null);
    if (seq !== selectionSeq) return;
    // the server learns the selection once (Python's Session sees it); with the grid already showing it,
    // its answer only brings the counts the server made
    timings.lassoSent = performance.now();
    const [body, extra] = selectionBody();
    const post = postBinary<StateMessage>(`/api/points/${encodeURIComponent(key)}/lasso`, body, extra);
    posted(post);
    const answered = async (msg: StateMessage) => {
      if (seq !== selectionSeq) return;
      timings.lassoAnswered = performance.now();
      showCounts(msg);
      selected = selectionKeys(msg);
      if (!direct) await refreshGrid(false);
      writeUrl();
    };
    if (direct) void post.then(answered).catch(fail);
    else await answered(await post);
  } catch (e) {
    fail(e);
  } finally {
    posted(Promise.resolve()); // no request made (a settled promise ignores this)
  }
}

/** Resolves once the next frame is painted (a task queued from requestAnimationFrame runs after that paint),
 * or after 100 ms when no frame comes (a hidden tab draws none). */
function afterPaint(): Promise<void> {
  return new Promise((resolve) => {
    const timer = window.setTimeout(resolve, 100);
    requestAnimationFrame(() => window.setTimeout(() => {
      window.clearTimeout(timer);
      resolve();
    }, 0));
  });
}

/** The legend hid or showed classes: the grid keeps to the classes shown. */
async function sendShown(): Promise<void> {
  const key = plot.key;
  if (!key) return;
  const seq = ++selectionSeq;
  try {
    // a selection listed by point: the legend narrows it here, at once
    if (grid.ownSource && gridByPoints()) await showSelectionByPoints(key);
    else setGridPoints(null);
    const bits = plot.shownBits();
    const msg = await postBinary<StateMessage>(`/api/points/${encodeURIComponent(key)}/shown`,
                                               bits ?? new Uint8Array(0));
    if (seq !== selectionSeq) return;
    showCounts(msg);
    if (!grid.ownSource) await refreshGrid(false);
    writeUrl();
  } catch (e) {
    fail(e);
  }
}

async function clearSelection(): Promise<void> {
  try {
    ++selectionSeq; // an answer to a lasso still on its way no longer counts
    await selectionPosted;
    await postJSON("/api/selection/clear", {});
    setGridPoints(null);
    selected = new Set();
    plot.setSelection([]);
    writeUrl();
    showCounts(await getJSON<StateMessage>("/api/state"));
    await refreshGrid(true);
  } catch (e) {
    fail(e);
  }
}

async function tagSelection(remove: boolean): Promise<void> {
  const input = $<HTMLInputElement>("tag-input");
  const tag = input.value.trim();
  if (!tag) {
    status("type a tag first", true);
    return;
  }
  try {
    // Objects lassoed in an object-level plot are tagged themselves (label tags), as in a patches view.
    await selectionPosted;
    const labels = (state?.selected_labels_count ?? 0) > 0;
    const res = await postJSON<Record<string, number>>(remove ? "/api/untag" : "/api/tag", { tags: [tag], labels });
    status(`${remove ? "untagged" : "tagged"} ${res[remove ? "untagged" : "tagged"]} ${labels ? "objects" : "samples"}: ${tag}`);
    await Promise.all([loadSummary(), refreshGrid(true)]);
  } catch (e) {
    fail(e);
  }
}

/** The server changed the view (similarity, an action): show it, its stages becoming the base view. */
async function viewReplaced(): Promise<void> {
  const st = await getJSON<StateMessage>("/api/state");
  showCounts(st);
  setGridPoints(null);
  baseStages = st.view?.stages ?? [];
  sidebar.clearFilters();
  await Promise.all([loadSummary(), refreshGrid(false), updateMask()]);
  writeUrl();
}

async function runAction(name: string): Promise<void> {
  try {
    const count = Math.floor(Number($<HTMLInputElement>("action-count").value)) || 100;
    status(`finding ${name}…`);
    await selectionPosted;
    const res = await postJSON<{ count: number; brain_key: string }>("/api/action", { name, count });
    status(`${name}: ${res.count.toLocaleString()} samples (${res.brain_key})`);
    await viewReplaced();
  } catch (e) {
    fail(e);
  }
}

$("tag-btn").addEventListener("click", () => void tagSelection(false));
$("untag-btn").addEventListener("click", () => void tagSelection(true));
$("tag-input").addEventListener("keydown", (ev) => {
  if ((ev as KeyboardEvent).key === "Enter") void tagSelection(false);
});
$("clear-btn").addEventListener("click", () => void clearSelection());
for (const btn of document.querySelectorAll<HTMLButtonElement>("#actions button[data-action]")) {
  btn.addEventListener("click", () => void runAction(btn.dataset.action!));
}
$("run-select").addEventListener("change", () => void openRun($<HTMLSelectElement>("run-select").value).catch(fail));
$("color-select").addEventListener("change", () =>
  void plot.colorBy($<HTMLSelectElement>("color-select").value).then(writeUrl, fail));
$("size-select").addEventListener("change", () =>
  void plot.sizeBy($<HTMLSelectElement>("size-select").value).then(writeUrl, fail));
const modeButtons = { lasso: $("mode-lasso"), box: $("mode-box"), panZoom: $("mode-pan") };
for (const [mode, btn] of Object.entries(modeButtons)) {
  btn.addEventListener("click", () => {
    plot.setMode(mode as "lasso" | "box" | "panZoom");
    for (const b of Object.values(modeButtons)) b.classList.toggle("active", b === btn);
  });
}
$("zoom-in").addEventListener("click", () => plot.zoom(1.5));
$("zoom-out").addEventListener("click", () => plot.zoom(1 / 1.5));
$("zoom-auto").addEventListener("click", () => plot.autoscale());
$("zoom-reset").addEventListener("click", () => plot.fit());
$("similarity-btn").addEventListener("click", async () => {
  try {
    const k = Number($<HTMLInputElement>("similarity-k").value) || undefined;
    const brain_key = $<HTMLSelectElement>("similarity-run").value || undefined;
    const reverse = $<HTMLInputElement>("similarity-reverse").checked;
    await selectionPosted;
    const msg = await postJSON<{ count: number }>("/api/sort_by_similarity", { k, brain_key, reverse });
    status(`sorted by similarity: ${msg.count} samples`);
    await viewReplaced();
  } catch (e) {
    fail(e);
  }
});

// ------------------------------------------------------------------ export, the hover card, the modal, keys

/** Download the selection (or the grid, when nothing is selected) as CSV or Parquet. */
async function exportFile(format: "csv" | "parquet"): Promise<void> {
  try {
    await selectionPosted;
    const what = selectedCount ? "selection" : "view";
    const res = await fetch(`/api/export.${format}?what=${what}`, { headers: requestHeaders() });
    if (!res.ok) throw new ApiError(res.status, (await res.json().catch(() => ({})))?.detail ?? res.statusText);
    const url = URL.createObjectURL(await res.blob());
    const a = document.createElement("a");
    a.href = url;
    a.download = `${state?.dataset ?? "embedlens"}-${what}.${format}`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
    status(`exported the ${what} as ${format === "csv" ? "CSV" : "Parquet"}`);
  } catch (e) {
    fail(e);
  }
}

/** Copy the selection (or the grid) into a new dataset, named in the sidebar. */
async function cloneToDataset(): Promise<void> {
  const input = $<HTMLInputElement>("clone-name");
  const name = input.value.trim();
  if (!name) {
    status("type a name for the new dataset first", true);
    input.focus();
    return;
  }
  try {
    await selectionPosted;
    const what = selectedCount ? "selection" : "view";
    status(`cloning the ${what} into ${name}…`);
    const res = await postJSON<{ name: string; count: number }>("/api/clone", { name, what });
    status(`new dataset ${res.name}: ${res.count.toLocaleString()} samples (el.load_dataset("${res.name}"))`);
    await loadDatasets();
  } catch (e) {
    fail(e);
  }
}

async function saveView(): Promise<void> {
  const input = $<HTMLInputElement>("save-view-name");
  const name = input.value.trim();
  if (!name) {
    status("type a name for the view first", true);
    input.focus();
    return;
  }
  try {
    await selectionPosted;
    const what = selectedCount ? "selection" : "view";
    const res = await postJSON<{ name: string; count: number }>("/api/save_view", { name, what });
    status(`saved view ${res.name}: ${res.count.toLocaleString()} samples (load_saved_view("${res.name}"))`);
  } catch (e) {
    fail(e);
  }
}

const pointIds = new Map<string, Promise<{ id: string; sample_id: string }>>();

function pointInfo(i: number): Promise<{ id: string; sample_id: string }> {
  const key = `${plot.key}/${i}`;
  let p = pointIds.get(key);
  if (!p) {
    p = getJSON<{ id: string; sample_id: string }>(`/api/points/${encodeURIComponent(plot.key!)}/point/${i}`);
    pointIds.set(key, p);
    p.catch(() => pointIds.delete(key));
  }
  return p;
}

/** The hover card of point i: its thumbnail, id and colour-by value. */
async function describePoint(i: number, tip: HTMLElement): Promise<void> {
  const value = plot.field ? `${plot.field}: ${plot.valueOf(i)}` : "";
  const text = document.createElement("div");
  text.className = "tip-text";
  text.textContent = value;
  tip.replaceChildren(text);
  tip.dataset.index = String(i);
  const info = await pointInfo(i).catch(() => null);
  if (!info || plot.hovered !== i) return;
  const img = document.createElement("img");
  img.src = `/media/thumb/${info.sample_id}`;
  img.alt = "";
  const id = document.createElement("div");
  id.className = "tip-id";
  id.textContent = info.id !== info.sample_id ? `object ${info.id}` : info.id;
  tip.dataset.id = info.id;
  tip.replaceChildren(img, id, text);
}

/** Double-click on a point: its sample in the modal. */
async function openPoint(i: number): Promise<void> {
  try {
    const info = await pointInfo(i);
    const tile = grid.loadedTiles().find((t) => t.id === info.id);
    await modal.show(tile ?? { id: info.id, sample_id: info.sample_id, thumb: "", full: "", missing: false, tags: [],
                               labels: [], boxes: [], selected: false, score: null, group: null });
  } catch (e) {
    fail(e);
  }
}

async function tagOne(tile: Tile, tag: string): Promise<void> {
  const objects = tile.id !== tile.sample_id;
  if (objects) {
    status("objects are tagged from the grid's selection", true);
    return;
  }
  try {
    await postJSON("/api/tag", { tags: [tag], ids: [tile.sample_id] });
    status(`tagged 1 sample: ${tag}`);
    await Promise.all([loadSummary(), refreshGrid(true)]);
  } catch (e) {
    fail(e);
  }
}

$("export-csv").addEventListener("click", () => void exportFile("csv"));
$("export-parquet").addEventListener("click", () => void exportFile("parquet"));
$("clone-btn").addEventListener("click", () => void cloneToDataset());
$("clone-name").addEventListener("keydown", (ev) => {
  if ((ev as KeyboardEvent).key === "Enter") void cloneToDataset();
});
$("save-view-btn").addEventListener("click", () => void saveView());
$("save-view-name").addEventListener("keydown", (ev) => {
  if ((ev as KeyboardEvent).key === "Enter") void saveView();
});

/** Arrow keys: the grid's focus by a tile or a row. */
const ARROWS: Record<string, [number, number]> = {
  ArrowRight: [1, 0], ArrowLeft: [-1, 0], ArrowDown: [0, 1], ArrowUp: [0, -1],
};

// Keys of the page (the modal has its own while it is open): arrows move the grid's focus, Enter opens the
// focused tile, f selects or unselects the point under the mouse (else the focused tile), t goes to the tag
// box, Esc clears the selection.
document.addEventListener("keydown", (ev) => {
  const typing = ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement;
  if (modal.open || ev.defaultPrevented || typing || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ARROWS[ev.key]) {
    ev.preventDefault();
    grid.moveFocus(...ARROWS[ev.key]);
  } else if (ev.key === "Enter" && !(ev.target instanceof HTMLButtonElement)) {
    const tile = grid.focusedTile();
    if (tile) void modal.show(tile);
  } else if (ev.key === "Escape") void clearSelection();
  else if (ev.key === "t") {
    ev.preventDefault();
    $("tag-input").focus();
  } else if (ev.key === "f") {
    const tile = grid.focusedTile();
    if (plot.hovered >= 0) plot.selectPoints(Uint32Array.of(plot.hovered), "toggle");
    else if (tile) void selectTile(tile, true);
  }
});

// ------------------------------------------------------------------ the tab's state in its address

/** Point indices as ranges: "0-5.9.12-13" (characters an address keeps as they are); null as soon as that
 * is longer than `max` characters (a large selection is not encoded whole only to be left out). */
function encodeRanges(idx: Uint32Array, max = Infinity): string | null {
  const parts: string[] = [];
  let length = -1;
  for (let k = 0; k < idx.length; ) {
    let j = k;
    while (j + 1 < idx.length && idx[j + 1] === idx[j] + 1) j++;
    const part = j > k ? `${idx[k]}-${idx[j]}` : String(idx[k]);
    length += part.length + 1;
    if (length > max) return null;
    parts.push(part);
    k = j + 1;
  }
  return parts.join(".");
}

function decodeRanges(text: string, count: number): Uint32Array {
  const out: number[] = [];
  for (const part of text.split(".")) {
    const [a, b] = part.split("-").map(Number);
    const end = Number.isInteger(b) ? b : a;
    if (!Number.isInteger(a) || a < 0 || end >= count || end - a > count) continue;
    for (let i = a; i <= end; i++) out.push(i);
  }
  return Uint32Array.from(out);
}

/** Longest address part kept for the view's stages and for the selection (larger ones stay out). */
const MAX_URL_PART = 16000;

/** This tab's view, plot, colour, legend and (small) selection, in its address: a reload restores them
 * and the address can be shared. The token, if any, stays. */
function writeUrl(): void {
  if (!restored) return;
  const p = new URLSearchParams(location.search);
  const set = (name: string, value: string | null) => (value ? p.set(name, value) : p.delete(name));
  set("dataset", state?.dataset ?? null);
  const stages = JSON.stringify(state?.view?.stages ?? []);
  set("view", stages !== "[]" && stages.length <= MAX_URL_PART ? stages : null);
  set("run", plot.key);
  set("color", plot.key ? plot.field || "none" : null);
  set("size", plot.sizeField || null);
  set("hide", plot.hidden.size ? JSON.stringify(plot.hiddenNames()) : null);
  set("sel", plot.selCount ? encodeRanges(plot.selectedIndices(), MAX_URL_PART) : null);
  const next = `${location.pathname}?${p.toString()}`;
  if (next !== `${location.pathname}${location.search}`) history.replaceState(null, "", next);
}

// ------------------------------------------------------------------ hooks for tests and benchmarks

(window as any).__embedlens = {
  ready: false,
  revision: 0,
  plot,
  grid,
  timings,
  toData: (x: number, y: number) => plot.toData(x, y),
  toPage: (x: number, y: number) => plot.toPage(x, y),
  lassoData: () => plot.lassoData(),
  selectedPoints: () => plot.selectedPoints(),
  visiblePoints: () => plot.visiblePoints(),
  drawnPoints: () => plot.drawnPoints(),
  categories: () => plot.header?.categories ?? [],
  hiddenCategories: () => plot.hiddenNames(),
  legendCounts: () => Object.fromEntries([...document.querySelectorAll<HTMLElement>(".legend-item")].map(
    (el) => [el.dataset.name, [Number(el.dataset.selected), Number(el.dataset.inView)]])),
  selectedCount: () => plot.selCount,
  codes: () => (plot.codes ? Array.from(plot.codes) : []),
  gridTotal: () => grid.total,
  gridIds: () => grid.idsInDom(),
  openRun: (key: string) => openRun(key),
  modal,
  state: () => state,
};

connectLive(onLive, (up) => document.body.classList.toggle("offline", !up));
