// The page: wires the sidebar, the grid and the plot to the server, and keeps them in sync with it.

import "./style.css";
import {
  ApiError,
  connectLive,
  getBinary,
  getClientId,
  getJSON,
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
import { Grid } from "./grid";
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
const timings = { gridUpdated: 0, lassoSent: 0, lassoAnswered: 0 };

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
    prev: $("modal-prev"), next: $("modal-next") },
  { neighbour: (tile, step) => grid.neighbour(tile.id, step), error: fail },
);

const plot = new Plot($<HTMLCanvasElement>("plot-canvas"), $("plot-empty"), $("legend"), {
  lasso: (key, indices) => void lassoed(key, indices),
  clear: () => void clearSelection(),
  error: fail,
});

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
  selectedCount = msg.selected_count ?? 0;
  const grid_count = msg.grid_count ?? 0;
  const view = msg.view?.count ?? 0;
  $("counts").textContent = msg.dataset
    ? `${msg.dataset} · ${grid_count.toLocaleString()} shown` +
      (msg.lasso ? ` (lasso: ${msg.lasso.points.toLocaleString()} points)` : ` of ${view.toLocaleString()} in view`)
    : "no dataset";
  const objects = msg.selected_labels_count ?? 0;
  $("selection-count").textContent = objects
    ? `${objects.toLocaleString()} objects selected`
    : selectedCount ? `${selectedCount.toLocaleString()} selected` : "no selection";
  for (const id of ["tag-btn", "untag-btn", "clear-btn"]) $<HTMLButtonElement>(id).disabled = selectedCount === 0;
  $<HTMLButtonElement>("similarity-btn").disabled = selectedCount === 0;
}

async function loadSummary(): Promise<void> {
  summary = await getJSON<Summary>("/api/summary");
  sidebar.render(summary, baseStages);
  for (const btn of document.querySelectorAll<HTMLButtonElement>("#actions button[data-action]")) {
    btn.disabled = !summary.actions[btn.dataset.action as keyof Summary["actions"]]?.length;
  }
}

async function loadRuns(): Promise<void> {
  const { runs } = await getJSON<{ runs: RunInfo[] }>("/api/runs");
  const sel = $<HTMLSelectElement>("run-select");
  const previous = plot.key;
  sel.replaceChildren(
    ...runs.map((r) => new Option(`${r.key} (${r.method}${r.patches_field ? `, ${r.patches_field}` : ""})`, r.key)),
  );
  if (!runs.length) {
    $("plot-empty").textContent = "No visualization runs: compute one with el.compute_visualization(..., brain_key=...)";
    return;
  }
  const key = runs.some((r) => r.key === previous) ? previous! : runs[0].key;
  sel.value = key;
  await openRun(key);
}

async function loadSimilarity(): Promise<void> {
  const { runs } = await getJSON<{ runs: string[] }>("/api/similarity_runs");
  $("similarity-section").hidden = runs.length === 0;
  $<HTMLSelectElement>("similarity-run").replaceChildren(...runs.map((r) => new Option(r, r)));
}

async function openRun(key: string): Promise<void> {
  await plot.open(key);
  const colorSel = $<HTMLSelectElement>("color-select");
  const fields = plot.meta?.color_fields ?? [];
  colorSel.replaceChildren(new Option("(no colour)", ""), ...fields.map((f) => new Option(f.path, f.path)));
  $<HTMLSelectElement>("size-select").replaceChildren(
    new Option("(one size)", ""),
    ...fields.filter((f) => f.kind === "numeric").map((f) => new Option(`size: ${f.path}`, f.path)),
  );
  const first = fields.find((f) => f.kind === "categorical");
  colorSel.value = first ? first.path : "";
  if (first) await plot.colorBy(first.path);
  await updateMask();
  await syncPlotSelection();
}

async function updateMask(): Promise<void> {
  if (!plot.key) return;
  const buf = await getBinary(`/api/points/${encodeURIComponent(plot.key)}/mask`);
  plot.setMask(new Uint8Array(buf));
}

/** Light up the selection in the plot: the lasso's own points, or the points of the selected samples. */
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
  if (plot.key === key) plot.highlight(new Uint32Array(idx));
}

/** A whole new state (first message, another dataset, refresh): reload everything. */
async function applyFresh(msg: StateMessage): Promise<void> {
  showCounts(msg);
  baseStages = msg.view?.stages ?? [];
  sidebar.clearFilters();
  selected = selectionKeys(msg);
  const datasets = getJSON<{ datasets: string[]; current: string | null }>("/api/datasets").then(
    ({ datasets, current }) => sidebar.setDatasets(datasets, current),
  );
  if (!msg.dataset) return datasets;
  // the grid's page is asked for first: the server answers one request at a time
  await Promise.all([refreshGrid(false), datasets, loadSummary(), loadSimilarity()]);
  await loadRuns();
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
        baseStages = msg.view?.stages ?? [];
        sidebar.clearFilters();
        await Promise.all([loadSummary(), refreshGrid(false), updateMask()]);
        break;
      case "selection":
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
    await Promise.all([loadSummary(), refreshGrid(false), updateMask()]);
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
    const res = await postJSON<{ selected_count: number }>("/api/selection", {
      ids: [id],
      mode: additive ? "toggle" : "replace",
      labels: tile.id !== tile.sample_id,
    });
    selectedCount = res.selected_count;
    if (selected === null) await refreshGrid(true);
    const msg = await getJSON<StateMessage>("/api/state");
    showCounts(msg);
    await syncPlotSelection();
  } catch (e) {
    fail(e);
  }
}

// A lasso travels as uint32 indices, or as one bit per point of the plot when that is smaller (more than
// 1 point in 32 selected): a lasso of 500k of 1M points is 125 kB instead of 2 MB.
function lassoBody(indices: Uint32Array): [ArrayBufferView, Record<string, string>] {
  const n = plot.count;
  if (indices.length * 32 <= n) return [indices, {}];
  const bits = new Uint8Array((n + 7) >> 3);
  for (const i of indices) bits[i >> 3] |= 1 << (i & 7);
  return [bits, { "X-Embedlens-Encoding": "bitmask" }];
}

async function lassoed(key: string, indices: Uint32Array): Promise<void> {
  try {
    timings.lassoSent = performance.now();
    const msg = await postBinary<StateMessage>(`/api/points/${encodeURIComponent(key)}/lasso`, ...lassoBody(indices));
    timings.lassoAnswered = performance.now();
    showCounts(msg);
    selected = selectionKeys(msg);
    await refreshGrid(false);
  } catch (e) {
    fail(e);
  }
}

async function clearSelection(): Promise<void> {
  try {
    await postJSON("/api/selection/clear", {});
    selected = new Set();
    plot.highlight([]);
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
  baseStages = st.view?.stages ?? [];
  sidebar.clearFilters();
  await Promise.all([loadSummary(), refreshGrid(false), updateMask()]);
}

async function runAction(name: string): Promise<void> {
  try {
    const count = Math.floor(Number($<HTMLInputElement>("action-count").value)) || 100;
    status(`finding ${name}…`);
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
$("color-select").addEventListener("change", () => void plot.colorBy($<HTMLSelectElement>("color-select").value).catch(fail));
$("size-select").addEventListener("change", () => void plot.sizeBy($<HTMLSelectElement>("size-select").value).catch(fail));
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
    const msg = await postJSON<{ count: number }>("/api/sort_by_similarity", { k, brain_key, reverse });
    status(`sorted by similarity: ${msg.count} samples`);
    await viewReplaced();
  } catch (e) {
    fail(e);
  }
});

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
  categories: () => plot.header?.categories ?? [],
  hiddenCategories: () => [...plot.hidden].map((c) => String(plot.header?.categories?.[c] ?? "(none)")),
  codes: () => (plot.codes ? Array.from(plot.codes) : []),
  gridTotal: () => grid.total,
  gridIds: () => grid.idsInDom(),
  openRun: (key: string) => openRun(key),
  modal,
  state: () => state,
};

connectLive(onLive, (up) => document.body.classList.toggle("offline", !up));
