// The embeddings panel: a regl-scatterplot of one visualization run, coloured by a field, with a legend.
// Points arrive as little-endian float32 x,y pairs and colour-by values as uint8/uint16 codes or float32.

import createScatterplot from "regl-scatterplot";
import { getBinary, getJSON, type RunMeta, type ValuesHeader } from "./api";

// The few scatterplot methods used here, typed loosely: the library's own types are stricter than needed.
interface Scatterplot {
  draw(points: unknown, options?: Record<string, unknown>): Promise<void>;
  set(props: Record<string, unknown>): void;
  get(prop: string): unknown;
  select(points: number[], options?: { preventEvent?: boolean; merge?: boolean }): void;
  deselect(options?: { preventEvent?: boolean }): void;
  filter(points: number[], options?: { preventEvent?: boolean }): void;
  unfilter(options?: { preventEvent?: boolean }): void;
  zoomToArea(rect: { x: number; y: number; width: number; height: number }, options?: unknown): Promise<void>;
  subscribe(event: string, handler: (payload: any) => void, times?: number): unknown;
  refresh(): void;
  destroy(): void;
}

export interface PlotEvents {
  lasso(brainKey: string, indices: Uint32Array): void;
  clear(): void;
  error(message: string): void;
}

export interface PlotTimings {
  openStart: number;
  pointsLoaded: number;
  drawn: number;
  firstFrame: number;
  lassoEnd: number;
  pointerUp: number;
}

// Tableau-like categorical palette; the last colour is for missing values.
const PALETTE = [
  "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];
const MISSING = "#555b66";
const BASE = "#8fa3bf";
/** Runs with more points than this are drawn in regl-scatterplot's performance mode. */
const FAST_ABOVE = 300_000;
const VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"];

export class Plot {
  private sp: Scatterplot | null = null;
  key: string | null = null;
  meta: RunMeta | null = null;
  count = 0;
  private raw: Float32Array = new Float32Array(0);
  private cx = 0;
  private cy = 0;
  private s = 1;
  private xs = new Float32Array(0);
  private ys = new Float32Array(0);
  header: ValuesHeader | null = null;
  field = "";
  sizeField = "";
  private z: Float32Array | null = null;
  private zCategorical = true;
  private w: Float32Array | null = null;
  private colors: string[] = [BASE];
  private baseSize = 4;
  private fast = false;
  private mode: "lasso" | "box" | "panZoom" = "lasso";
  codes: Uint8Array | Uint16Array | null = null;
  hidden = new Set<number>();
  private mask: Uint8Array | null = null;
  private suppress = 0;
  lastLasso: [number, number][] = [];
  private lassoPoints: number[] | null = null;
  private lastSelect: number[] = [];
  timings: PlotTimings = { openStart: 0, pointsLoaded: 0, drawn: 0, firstFrame: 0, lassoEnd: 0, pointerUp: 0 };
  frames = 0;
  private clickTimer = 0;

  constructor(
    private canvas: HTMLCanvasElement,
    private readonly empty: HTMLElement,
    private readonly legend: HTMLElement,
    private readonly events: PlotEvents,
  ) {
    this.listen();
    // The canvas follows its box (which shrinks when the legend appears), not the window.
    const box = canvas.parentElement as HTMLElement;
    new ResizeObserver(() => {
      if (!this.sp) return;
      const { width, height } = box.getBoundingClientRect();
      if (width > 0 && height > 0) this.sp.set({ width, height });
    }).observe(box);
  }

  private listen(): void {
    this.canvas.addEventListener("mouseup", () => (this.timings.pointerUp = performance.now()), true);
  }

  private ensure(): Scatterplot {
    if (this.sp) return this.sp;
    const { width, height } = (this.canvas.parentElement as HTMLElement).getBoundingClientRect();
    const sp = createScatterplot({
      canvas: this.canvas,
      // square points without blending: fewer fragment operations per frame, which counts at a
      // million points (a creation-time setting, so a run of another size makes a new plot)
      performanceMode: this.fast,
      width: Math.max(1, width),
      height: Math.max(1, height),
      backgroundColor: "#16181d",
      pointColor: BASE,
      pointColorActive: "#ffffff",
      pointColorHover: "#ffd84d",
      pointOutlineWidth: 1.5,
      pointSizeSelected: 1,
      opacityInactiveScale: 0.35,
      opacityInactiveMax: 0.35,
      lassoColor: "#ffd84d",
      lassoMinDelay: 10,
      lassoMinDist: 2,
      lassoClearEvent: "deselect",
      mouseMode: "lasso",
      actionKeyMap: { lasso: "shift", merge: "shift", remove: "alt" },
      deselectOnDblClick: true,
      deselectOnEscape: true,
    } as any) as unknown as Scatterplot;
    sp.subscribe("select", ({ points }: { points: number[] }) => {
      if (this.suppress || !this.key) return;
      this.lastSelect = points;
      if (this.lassoPoints && points.length <= 1 && performance.now() - this.timings.lassoEnd < 400) {
        // A lasso closed where it started ends with a click there, which regl-scatterplot takes as a
        // click on the nearest point: keep the lasso's selection instead.
        this.highlight(this.lassoPoints);
        return;
      }
      this.events.lasso(this.key, Uint32Array.from(points));
    });
    sp.subscribe("deselect", () => {
      if (this.suppress) return;
      this.events.clear();
    });
    sp.subscribe("lassoEnd", ({ coordinates }: { coordinates: [number, number][] }) => {
      this.timings.lassoEnd = performance.now();
      this.lastLasso = coordinates.map(([x, y]) => [x, y]);
      // events arrive asynchronously: the selection the lasso made is the last "select" before this one
      this.lassoPoints = this.lastSelect;
    });
    sp.subscribe("draw", () => {
      this.frames++;
    });
    this.sp = sp;
    return sp;
  }

  /** Drag to draw a lasso, a box, or to pan (the wheel zooms in every mode). */
  setMode(mode: "lasso" | "box" | "panZoom"): void {
    this.mode = mode;
    this.ensure().set(mode === "panZoom" ? { mouseMode: "panZoom" }
      : { mouseMode: "lasso", lassoType: mode === "box" ? "rectangle" : "freeform" });
  }

  /** Zoom by `factor` (> 1: in) about the centre of the panel. */
  zoom(factor: number): void {
    const sp = this.sp;
    if (!sp) return;
    sp.set({ cameraDistance: (sp.get("cameraDistance") as number) / factor });
  }

  /** Fit the points now shown (not hidden by the legend or the view). */
  autoscale(): void {
    const sp = this.sp;
    if (!sp || !this.count) return;
    const shown = sp.get("filteredPoints") as number[];
    if (shown.length) void (sp as any).zoomToPoints(shown, { padding: 0.1, transition: true });
  }

  /** Load and draw run `key`: the panel's first frame is timed in `timings`. */
  async open(key: string): Promise<void> {
    this.timings = { openStart: performance.now(), pointsLoaded: 0, drawn: 0, firstFrame: 0, lassoEnd: 0, pointerUp: 0 };
    this.key = key;
    this.hidden.clear();
    this.header = null;
    this.codes = null;
    this.field = "";
    this.sizeField = "";
    this.z = null;
    this.w = null;
    this.mask = null;
    this.legend.replaceChildren();
    const [meta, buf] = await Promise.all([
      getJSON<RunMeta>(`/api/points/${encodeURIComponent(key)}/meta`),
      getBinary(`/api/points/${encodeURIComponent(key)}`),
    ]);
    if (this.key !== key) return;
    this.meta = meta;
    this.raw = new Float32Array(buf);
    this.count = this.raw.length / 2;
    this.timings.pointsLoaded = performance.now();
    const [x0, y0, x1, y1] = meta.bounds;
    this.cx = (x0 + x1) / 2;
    this.cy = (y0 + y1) / 2;
    this.s = (Math.max(x1 - x0, y1 - y0) / 2) * 1.04 || 1;
    const n = this.count;
    this.xs = new Float32Array(n);
    this.ys = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      this.xs[i] = (this.raw[2 * i] - this.cx) / this.s;
      this.ys[i] = (this.raw[2 * i + 1] - this.cy) / this.s;
    }
    this.empty.textContent = "";
    if (this.sp && this.fast !== n > FAST_ABOVE) {
      this.sp.destroy();
      this.sp = null;
      // a fresh canvas, so the new plot gets a WebGL context of its own
      const fresh = this.canvas.cloneNode() as HTMLCanvasElement;
      this.canvas.replaceWith(fresh);
      this.canvas = fresh;
      this.listen();
    }
    this.fast = n > FAST_ABOVE;
    const sp = this.ensure();
    this.setMode(this.mode);
    this.baseSize = n < 5_000 ? 6 : n < 50_000 ? 4 : n < 300_000 ? 2.5 : 1.5;
    sp.set({ pointSize: this.baseSize, opacity: n < 50_000 ? 0.9 : 0.6, colorBy: null, sizeBy: null, pointColor: BASE });
    await sp.draw({ x: this.xs, y: this.ys });
    this.timings.drawn = performance.now();
    await sp.zoomToArea({ x: -1, y: -1, width: 2, height: 2 });
    await new Promise<void>((resolve) => {
      sp.subscribe(
        "draw",
        () => {
          this.timings.firstFrame = performance.now();
          resolve();
        },
        1,
      );
      (sp as any).redraw?.();
    });
  }

  fit(): void {
    this.sp?.zoomToArea({ x: -1, y: -1, width: 2, height: 2 }, { transition: true });
  }

  /** Colour the points by `path` (one of the run's colour fields); "" for one colour. */
  async colorBy(path: string): Promise<void> {
    const key = this.key;
    if (!key || !this.sp) return;
    this.field = path;
    this.hidden.clear();
    if (!path) {
      this.header = null;
      this.codes = null;
      this.z = null;
      this.colors = [BASE];
      await this.redraw();
      this.renderLegend();
      this.applyFilter();
      return;
    }
    const { header, buf } = await this.fetchValues(key, path);
    if (this.key !== key || this.field !== path) return;
    this.header = header;
    const z = new Float32Array(this.count);
    if (header.kind === "categorical") {
      const codes = header.dtype === "<u2" ? new Uint16Array(buf) : new Uint8Array(buf);
      this.codes = codes;
      for (let i = 0; i < this.count; i++) z[i] = codes[i];
      const ncat = header.categories?.length ?? 0;
      this.colors = Array.from({ length: ncat }, (_, i) => PALETTE[i % PALETTE.length]).concat([MISSING]);
    } else {
      this.codes = null;
      unitScale(new Float32Array(buf), header, z);
      this.colors = VIRIDIS;
    }
    this.z = z;
    this.zCategorical = header.kind === "categorical";
    await this.redraw();
    this.renderLegend();
    this.applyFilter();
  }

  /** Size the points by the numeric field `path` (small: lowest, large: highest); "" for one size. */
  async sizeBy(path: string): Promise<void> {
    const key = this.key;
    if (!key || !this.sp) return;
    this.sizeField = path;
    if (!path) {
      this.w = null;
      await this.redraw();
      return;
    }
    const { header, buf } = await this.fetchValues(key, path);
    if (this.key !== key || this.sizeField !== path) return;
    if (header.kind !== "numeric") throw new Error(`size by needs a numeric field; ${path} is categorical`);
    const w = new Float32Array(this.count);
    unitScale(new Float32Array(buf), header, w);
    this.w = w;
    await this.redraw();
  }

  private async fetchValues(key: string, path: string): Promise<{ header: ValuesHeader; buf: ArrayBuffer }> {
    const q = `field=${encodeURIComponent(path)}`;
    const [header, buf] = await Promise.all([
      getJSON<ValuesHeader>(`/api/points/${encodeURIComponent(key)}/values?${q}`),
      getBinary(`/api/points/${encodeURIComponent(key)}/values.bin?${q}`),
    ]);
    return { header, buf };
  }

  /** Draw the points again with the current colour (z) and size (w) values, keeping the selection. */
  private async redraw(): Promise<void> {
    const sp = this.sp;
    if (!sp) return;
    const selected = sp.get("selectedPoints") as number[];
    const spatialIndex = sp.get("spatialIndex");
    const z = this.z ?? (this.w ? new Float32Array(this.count) : null);
    this.suppress++;
    try {
      await sp.draw(
        { x: this.xs, y: this.ys, ...(z ? { z } : {}), ...(this.w ? { w: this.w } : {}) },
        {
          zDataType: this.z && this.zCategorical ? "categorical" : "continuous",
          wDataType: "continuous",
          spatialIndex,
          select: selected,
        },
      );
      const size = this.baseSize;
      sp.set({
        colorBy: this.z ? "valueA" : null,
        pointColor: this.z ? this.colors : BASE,
        sizeBy: this.w ? "valueB" : null,
        pointSize: this.w ? Array.from({ length: 8 }, (_, i) => size * (0.5 + i * 0.5)) : size,
      });
    } finally {
      this.suppress--;
    }
  }

  /** Hide points outside the current view (mask: one byte per point) and of hidden legend classes. */
  setMask(mask: Uint8Array | null): void {
    // a mask of all ones (a view without filters) hides nothing: keep none, so nothing is redrawn
    this.mask = mask && mask.length === this.count && mask.includes(0) ? mask : null;
    this.applyFilter();
  }

  private applyFilter(): void {
    const sp = this.sp;
    if (!sp || !this.count) return;
    const codes = this.codes;
    const hidden = this.hidden;
    const mask = this.mask;
    // Nothing to hide and nothing hidden: unfilter would upload every point again and draw a frame.
    if (!mask && !(codes && hidden.size) && !sp.get("isPointsFiltered")) return;
    const visible: number[] = [];
    let all = true;
    for (let i = 0; i < this.count; i++) {
      if ((mask && !mask[i]) || (codes && hidden.size && hidden.has(codes[i]))) {
        all = false;
      } else {
        visible.push(i);
      }
    }
    this.suppress++;
    try {
      if (all) sp.unfilter({ preventEvent: true });
      else sp.filter(visible, { preventEvent: true });
    } finally {
      this.suppress--;
    }
  }

  /** Show `indices` as selected, without reporting it back as a lasso. */
  highlight(indices: ArrayLike<number>): void {
    const sp = this.sp;
    if (!sp || !this.count) return;
    this.suppress++;
    try {
      if (indices.length) sp.select(Array.from(indices), { preventEvent: true });
      else sp.deselect({ preventEvent: true });
    } finally {
      this.suppress--;
    }
  }

  private renderLegend(): void {
    this.legend.replaceChildren();
    const h = this.header;
    if (!h) return;
    if (h.kind === "numeric") {
      const bar = document.createElement("div");
      bar.className = "legend-gradient";
      bar.style.background = `linear-gradient(to right, ${VIRIDIS.join(",")})`;
      const name = document.createElement("span");
      name.textContent = this.field;
      const lo = document.createElement("span");
      lo.textContent = fmt(h.min);
      const hi = document.createElement("span");
      hi.textContent = fmt(h.max) + (h.missing ? ` · ${h.missing.toLocaleString()} missing` : "");
      this.legend.append(name, lo, bar, hi);
      return;
    }
    const cats = h.categories ?? [];
    const entries = cats.map((c, i) => ({ code: i, name: String(c), count: h.counts?.[i] ?? 0 }));
    if (h.missing) entries.push({ code: h.missing_code ?? cats.length, name: "(none)", count: h.missing });
    for (const e of entries) {
      const item = document.createElement("button");
      item.type = "button";
      item.className = "legend-item";
      item.dataset.code = String(e.code);
      item.dataset.name = e.name;
      item.title = "click: hide or show; double-click: show only this";
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = e.code < cats.length ? PALETTE[e.code % PALETTE.length] : MISSING;
      const label = document.createElement("span");
      label.textContent = `${e.name} `;
      const count = document.createElement("span");
      count.className = "muted";
      count.textContent = String(e.count);
      item.append(sw, label, count);
      item.addEventListener("click", () => {
        window.clearTimeout(this.clickTimer);
        this.clickTimer = window.setTimeout(() => this.toggleClass(e.code), 220);
      });
      item.addEventListener("dblclick", () => {
        window.clearTimeout(this.clickTimer);
        this.isolateClass(e.code, entries.map((x) => x.code));
      });
      this.legend.appendChild(item);
    }
  }

  toggleClass(code: number): void {
    if (this.hidden.has(code)) this.hidden.delete(code);
    else this.hidden.add(code);
    this.updateLegendState();
    this.applyFilter();
  }

  isolateClass(code: number, all: number[]): void {
    const isolated = !this.hidden.has(code) && this.hidden.size === all.length - 1;
    this.hidden = isolated ? new Set() : new Set(all.filter((c) => c !== code));
    this.updateLegendState();
    this.applyFilter();
  }

  private updateLegendState(): void {
    for (const el of this.legend.querySelectorAll<HTMLElement>(".legend-item")) {
      el.classList.toggle("off", this.hidden.has(Number(el.dataset.code)));
    }
  }

  // ---------------------------------------------------------------- coordinates (test hooks, bench)

  private clip(): { a: number; b: number; c: number; d: number; tx: number; ty: number; rect: DOMRect } {
    const rect = this.canvas.getBoundingClientRect();
    const v = this.ensure().get("cameraView") as Float32Array;
    const aspect = rect.width / rect.height;
    // clip = projection(1/aspect, 1) * view * [x, y, 0, 1]; the view of a 2-D camera is affine.
    return { a: v[0] / aspect, b: v[4] / aspect, c: v[1], d: v[5], tx: v[12] / aspect, ty: v[13], rect };
  }

  /** Data coordinates under the page pixel (clientX, clientY). */
  toData(clientX: number, clientY: number): [number, number] {
    const { a, b, c, d, tx, ty, rect } = this.clip();
    const nx = -1 + (2 * (clientX - rect.left)) / rect.width - tx;
    const ny = 1 - (2 * (clientY - rect.top)) / rect.height - ty;
    const det = a * d - b * c;
    const x = (d * nx - b * ny) / det;
    const y = (a * ny - c * nx) / det;
    return [x * this.s + this.cx, y * this.s + this.cy];
  }

  /** Page pixel of the data point (x, y). */
  toPage(x: number, y: number): [number, number] {
    const { a, b, c, d, tx, ty, rect } = this.clip();
    const xn = (x - this.cx) / this.s;
    const yn = (y - this.cy) / this.s;
    const nx = a * xn + b * yn + tx;
    const ny = c * xn + d * yn + ty;
    return [rect.left + ((nx + 1) / 2) * rect.width, rect.top + ((1 - ny) / 2) * rect.height];
  }

  /** The last lasso polygon in data coordinates. */
  lassoData(): [number, number][] {
    return this.lastLasso.map(([x, y]) => [x * this.s + this.cx, y * this.s + this.cy]);
  }

  selectedPoints(): number[] {
    return this.sp ? (this.sp.get("selectedPoints") as number[]) : [];
  }

  /** Indices of the points drawn (not hidden by the legend or the view). */
  visiblePoints(): number[] {
    return this.sp && this.count ? (this.sp.get("filteredPoints") as number[]) : [];
  }

  dataPoint(i: number): [number, number] {
    return [this.raw[2 * i], this.raw[2 * i + 1]];
  }
}

/** `values` scaled to [0, 1] by the header's min and max into `out`; missing values become 0. */
function unitScale(values: Float32Array, header: ValuesHeader, out: Float32Array): void {
  const lo = header.min ?? 0;
  const span = (header.max ?? 1) - lo || 1;
  for (let i = 0; i < values.length; i++) out[i] = Number.isFinite(values[i]) ? (values[i] - lo) / span : 0;
}

function fmt(x: number | null | undefined): string {
  if (x === null || x === undefined) return "";
  return Number.isInteger(x) ? String(x) : x.toPrecision(3);
}
