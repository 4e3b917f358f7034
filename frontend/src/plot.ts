// The embeddings panel: a regl-scatterplot of one visualization run, coloured by a field, with a legend.
// Points arrive as little-endian float32 x,y pairs and colour-by values as uint8/uint16 codes or float32.
//
// The selection lives here, in the browser, as one byte per point (`sel`), next to the points the view
// keeps (`inView`) and the classes the legend hides: a lasso or a box is a point-in-polygon test over the
// flat coordinate arrays, drawn on a 2-D canvas over the WebGL one, so the pointer never waits for the
// points to be drawn again; the points are redrawn once, when the mouse comes up.

import createScatterplot from "regl-scatterplot";
import { getBinary, getJSON, type RunMeta, type ValuesHeader } from "./api";
import { THUMB_BUDGET, ThumbLayer, type ViewMap } from "./thumbs";

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
  zoomToPoints(points: number[], options?: unknown): Promise<void>;
  subscribe(event: string, handler: (payload: any) => void, times?: number): unknown;
  refresh(): void;
  destroy(): void;
}

export interface PlotEvents {
  /** The user changed the selection in the plot (lasso, box, click); the points are drawn again when
   * the returned promise settles (the grid first: a frame of a million points holds the page). */
  selected(): Promise<void> | void;
  /** The legend hid or showed classes. */
  shown(): void;
  /** A point was double-clicked. */
  open(index: number): void;
  /** The counts of the selection changed (also while a lasso is drawn: `live`). */
  counts(selected: number, live: boolean): void;
  error(message: string): void;
}

export interface PlotTimings {
  openStart: number;
  pointsLoaded: number;
  drawn: number;
  firstFrame: number;
  lassoEnd: number;
  pointerUp: number;
  /** The lasso's or box's point-in-polygon test done. */
  inside: number;
  selected: number;
}

// Tableau-like categorical palette; MISSING for missing values, CONTEXT for points outside a small view.
const PALETTE = [
  "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];
const MISSING = "#555b66";
const BASE = "#8fa3bf";
const BACKGROUND = "#16181d";
const CONTEXT = "#2a2e36";
/** Unselected points while there is a selection: their colour this far towards the background. */
const DIM = 0.72;
/** Runs with more points than this are drawn in regl-scatterplot's performance mode. */
const FAST_ABOVE = 300_000;
/** A view of at most this many points (and under half the plot) shows the others dimmed, as context. */
export const CONTEXT_MAX = 5_000;
const VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"];
/** Cells per side of the hover index. */
const GRID = 256;
const HOVER_PX = 8;
/** Where the "Images in plot" choice is remembered. */
const IMAGES_KEY = "embedlens.imagesInPlot";

type Mode = "lasso" | "box" | "panZoom";

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
  private numeric: Float32Array | null = null;
  private w: Float32Array | null = null;
  private baseSize = 4;
  private fast = false;
  private mode: Mode = "lasso";
  /** Category code of each point (colour-by); numeric fields are cut into ten bins. */
  codes: Uint8Array | Uint16Array | null = null;
  private ncat = 0;
  hidden = new Set<number>();
  /** One byte per point: 1 = selected. */
  sel = new Uint8Array(0);
  selCount = 0;
  /** One byte per point: 1 = in the page's view (null: every point). */
  private inView: Uint8Array | null = null;
  inViewCount = 0;
  /** The view is small: the other points stay, dimmed, instead of being hidden. */
  context = false;
  private suppress = 0;
  /** The last lasso or box, in normalised plot coordinates (drawn until the selection changes). */
  private outline: [number, number][] = [];
  private drag: { x: number; y: number; path: [number, number][]; moved: boolean; button: number } | null = null;
  private cellStart = new Uint32Array(0);
  private cellPoints = new Uint32Array(0);
  private liveFrame = 0;
  private drawSeq = 0;
  private hoverFrame = 0;
  private hoverAt: [number, number] | null = null;
  hovered = -1;
  timings: PlotTimings = { openStart: 0, pointsLoaded: 0, drawn: 0, firstFrame: 0, lassoEnd: 0, pointerUp: 0, inside: 0, selected: 0 };
  frames = 0;
  private clickTimer = 0;
  /** The point the last click picked: a double-click opens it. A dblclick event's coordinates are whole
   * pixels while pointer events' are fractional, so looking the point up again could pick a neighbour. */
  private clicked = -1;
  private readonly overlay: HTMLCanvasElement;
  private readonly tip: HTMLElement;
  /** Thumbnails drawn at the points' positions when zoomed in (see thumbs.ts). */
  readonly thumbs: ThumbLayer;
  private readonly imagesToggle: HTMLInputElement;
  private boxW = 1;
  private boxH = 1;

  constructor(
    private canvas: HTMLCanvasElement,
    private readonly empty: HTMLElement,
    private readonly legend: HTMLElement,
    private readonly events: PlotEvents,
    private readonly describe: (index: number, tip: HTMLElement) => void,
  ) {
    const box = canvas.parentElement as HTMLElement;
    this.overlay = document.createElement("canvas");
    this.overlay.id = "plot-overlay";
    this.tip = document.createElement("div");
    this.tip.id = "plot-tip";
    this.tip.hidden = true;
    box.append(this.overlay, this.tip);
    this.thumbs = new ThumbLayer({
      key: () => (this.count ? this.key : null),
      count: () => this.count,
      xy: (i) => [this.xs[i], this.ys[i]],
      pointsIn: (x0, y0, x1, y1, limit) => this.pointsIn(x0, y0, x1, y1, limit),
      colorOf: (i) => this.colorOf(i),
      selectedState: (i) => (this.selCount ? this.sel[i] : -1),
    }, box, this.overlay);
    this.imagesToggle = this.makeImagesToggle(box);
    this.listen();
    // The canvas follows its box (which shrinks when the legend appears), not the window.
    new ResizeObserver(() => {
      const { width, height } = box.getBoundingClientRect();
      this.sizeOverlay(width, height);
      if (this.sp && width > 0 && height > 0) this.sp.set({ width, height });
    }).observe(box);
  }

  // ---------------------------------------------------------------- pointer: lasso, box, pan, hover, click

  private listen(): void {
    const ov = this.overlay;
    ov.addEventListener("pointerdown", (ev) => this.down(ev));
    ov.addEventListener("pointermove", (ev) => this.move(ev));
    ov.addEventListener("pointerup", (ev) => this.up(ev));
    ov.addEventListener("pointerleave", () => this.hover(null));
    ov.addEventListener("dblclick", (ev) => {
      const i = this.clicked >= 0 ? this.clicked : this.nearest(ev.clientX, ev.clientY);
      if (i >= 0) this.events.open(i);
      else this.clearSelection(true);
    });
    // the wheel zooms in every mode: hand it to the scatterplot's camera underneath
    ov.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      this.canvas.dispatchEvent(new WheelEvent("wheel", ev));
    }, { passive: false });
  }

  private down(ev: PointerEvent): void {
    if (ev.button !== 0) return;
    this.hover(null);
    if (this.mode === "panZoom") {
      // the camera pans on a press on its canvas, then follows the window's mouse moves
      this.canvas.dispatchEvent(new MouseEvent("mousedown", ev));
    } else {
      this.overlay.setPointerCapture(ev.pointerId);
    }
    this.drag = { x: ev.clientX, y: ev.clientY, path: [this.toNorm(ev.clientX, ev.clientY)], moved: false, button: 0 };
  }

  private move(ev: PointerEvent): void {
    const d = this.drag;
    if (!d) {
      this.hover([ev.clientX, ev.clientY]);
      return;
    }
    if (!d.moved && Math.hypot(ev.clientX - d.x, ev.clientY - d.y) < 3) return;
    d.moved = true;
    if (this.mode === "panZoom") return;
    const p = this.toNorm(ev.clientX, ev.clientY);
    if (this.mode === "box") d.path = [d.path[0], p];
    else d.path.push(p);
    this.outline = this.mode === "box" ? rectangle(d.path[0], p) : d.path;
    this.drawOverlay();
    // live counts, at most once a frame
    if (!this.liveFrame) {
      this.liveFrame = requestAnimationFrame(() => {
        this.liveFrame = 0;
        if (this.drag && this.outline.length > 2) {
          this.events.counts(scanInside(this.xs, this.ys, this.outline, this.selectable(), this.cells(), null), true);
        }
      });
    }
  }

  private up(ev: PointerEvent): void {
    const d = this.drag;
    this.drag = null;
    if (!d) return;
    this.timings.pointerUp = performance.now();
    this.clicked = -1;
    if (this.mode === "panZoom" && d.moved) return;
    if (!d.moved) {
      const i = (this.clicked = this.nearest(ev.clientX, ev.clientY));
      if (i >= 0) this.selectPoints(Uint32Array.of(i), ev.shiftKey ? "toggle" : "replace");
      else if (!ev.shiftKey) this.clearSelection(true);
      return;
    }
    const p = this.toNorm(ev.clientX, ev.clientY);
    const poly = this.mode === "box" ? rectangle(d.path[0], p) : [...d.path, p];
    this.timings.lassoEnd = performance.now();
    if (poly.length < 3) return;
    const inside = pointsInside(this.xs, this.ys, poly, this.selectable(), this.cells());
    this.timings.inside = performance.now();
    this.selectPoints(inside, ev.altKey ? "remove" : ev.shiftKey ? "add" : "replace", poly);
  }

  private hover(at: [number, number] | null): void {
    this.hoverAt = at;
    if (this.hoverFrame) return;
    this.hoverFrame = requestAnimationFrame(() => {
      this.hoverFrame = 0;
      const pos = this.hoverAt;
      const i = pos ? this.nearest(pos[0], pos[1]) : -1;
      this.overlay.style.cursor = i >= 0 ? "pointer" : this.mode === "panZoom" ? "grab" : "crosshair";
      if (i < 0 || !pos) {
        this.hovered = -1;
        this.tip.hidden = true;
        return;
      }
      const box = this.overlay.getBoundingClientRect();
      this.tip.style.left = `${Math.min(pos[0] - box.left + 14, box.width - 180)}px`;
      this.tip.style.top = `${Math.min(pos[1] - box.top + 14, box.height - 150)}px`;
      if (i !== this.hovered) {
        this.hovered = i;
        this.describe(i, this.tip);
      }
      this.tip.hidden = false;
    });
  }

  /** The colour-by value of point i, as the legend names it. */
  valueOf(i: number): string {
    const h = this.header;
    if (!h) return "";
    if (h.kind === "numeric") return this.numeric && Number.isFinite(this.numeric[i]) ? fmt(this.numeric[i]) : "(none)";
    const c = this.codes?.[i] ?? -1;
    return c >= 0 && c < (h.categories?.length ?? 0) ? String(h.categories![c]) : "(none)";
  }

  /** The visible point nearest to the page pixel (x, y) within a few pixels; -1 if none. */
  nearest(clientX: number, clientY: number): number {
    if (!this.count || !this.cellStart.length) return -1;
    const [x, y] = this.toNorm(clientX, clientY);
    const [x2] = this.toNorm(clientX + HOVER_PX, clientY);
    const r = Math.abs(x2 - x);
    const cell = 2 / GRID;
    const c0 = Math.max(0, Math.floor((x - r + 1) / cell));
    const c1 = Math.min(GRID - 1, Math.floor((x + r + 1) / cell));
    const r0 = Math.max(0, Math.floor((y - r + 1) / cell));
    const r1 = Math.min(GRID - 1, Math.floor((y + r + 1) / cell));
    const ok = this.selectable();
    let best = -1;
    let bestD = r * r;
    for (let row = r0; row <= r1; row++) {
      for (let col = c0; col <= c1; col++) {
        const c = row * GRID + col;
        for (let k = this.cellStart[c]; k < this.cellStart[c + 1]; k++) {
          const i = this.cellPoints[k];
          if (ok && !ok[i]) continue;
          const dx = this.xs[i] - x;
          const dy = this.ys[i] - y;
          const dd = dx * dx + dy * dy;
          if (dd <= bestD) {
            bestD = dd;
            best = i;
          }
        }
      }
    }
    return best;
  }

  /** Points in cells of a GRID x GRID grid over [-1, 1]^2 (a counting sort: two passes, no objects). */
  private buildIndex(): void {
    const n = this.count;
    const cellOf = new Uint32Array(n);
    const start = new Uint32Array(GRID * GRID + 1);
    for (let i = 0; i < n; i++) {
      cellOf[i] = gridCell(this.ys[i]) * GRID + gridCell(this.xs[i]);
      start[cellOf[i] + 1]++;
    }
    for (let c = 0; c < GRID * GRID; c++) start[c + 1] += start[c];
    const fill = start.slice(0, GRID * GRID);
    const pts = new Uint32Array(n);
    for (let i = 0; i < n; i++) pts[fill[cellOf[i]]++] = i;
    this.cellStart = start;
    this.cellPoints = pts;
  }

  /** The hover grid's cells, for a lasso's test (null until the run's index is built). */
  private cells(): Cells | null {
    return this.cellStart.length === GRID * GRID + 1 && this.cellPoints.length === this.count
      ? { start: this.cellStart, points: this.cellPoints } : null;
  }

  // ---------------------------------------------------------------- the overlay (lasso path)

  private sizeOverlay(width: number, height: number): void {
    this.boxW = Math.max(1, width);
    this.boxH = Math.max(1, height);
    this.thumbs.size(width, height);
    const dpr = window.devicePixelRatio || 1;
    this.overlay.width = Math.max(1, Math.round(width * dpr));
    this.overlay.height = Math.max(1, Math.round(height * dpr));
    this.overlay.style.width = `${width}px`;
    this.overlay.style.height = `${height}px`;
    this.drawOverlay();
  }

  private drawOverlay(): void {
    const ctx = this.overlay.getContext("2d");
    if (!ctx) return;
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, this.overlay.width, this.overlay.height);
    if (this.outline.length < 2 || !this.sp) return;
    const rect = this.overlay.getBoundingClientRect();
    ctx.beginPath();
    for (const [k, [x, y]] of this.outline.entries()) {
      const [px, py] = this.normToPage(x, y);
      if (k) ctx.lineTo(px - rect.left, py - rect.top);
      else ctx.moveTo(px - rect.left, py - rect.top);
    }
    ctx.closePath();
    ctx.fillStyle = "rgba(255, 216, 77, 0.06)";
    ctx.fill();
    ctx.strokeStyle = "#ffd84d";
    ctx.lineWidth = 1.5;
    ctx.setLineDash(this.drag ? [] : [5, 4]);
    ctx.stroke();
  }

  // ---------------------------------------------------------------- the scatterplot

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
      backgroundColor: BACKGROUND,
      pointColor: BASE,
      pointColorActive: "#ffffff",
      pointColorHover: "#ffd84d",
      pointOutlineWidth: 1.5,
      pointSizeSelected: 1,
      // unselected points are dimmed by colour (DIM), which works without blending too
      opacityInactiveScale: 1,
      opacityInactiveMax: 1,
      mouseMode: "panZoom",
      deselectOnDblClick: false,
      deselectOnEscape: false,
    } as any) as unknown as Scatterplot;
    sp.subscribe("draw", () => {
      this.frames++;
    });
    sp.subscribe("view", () => this.drawOverlay());
    // published inside the render frame (the other events come a task later): the images move with the points
    sp.subscribe("drawing", (rv: { view: Float32Array }) => this.thumbs.draw(this.viewMap(rv.view)));
    this.sp = sp;
    return sp;
  }

  /** Drag to draw a lasso, a box, or to pan (the wheel zooms in every mode). */
  setMode(mode: Mode): void {
    this.mode = mode;
    this.overlay.style.cursor = mode === "panZoom" ? "grab" : "crosshair";
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
    const shown = this.shownIndices(true);
    if (shown.length) void sp.zoomToPoints(Array.from(shown), { padding: 0.1, transition: true });
  }

  /** Load and draw run `key`: the panel's first frame is timed in `timings`. */
  async open(key: string): Promise<void> {
    this.timings = { openStart: performance.now(), pointsLoaded: 0, drawn: 0, firstFrame: 0, lassoEnd: 0, pointerUp: 0, inside: 0, selected: 0 };
    this.key = key;
    this.hidden.clear();
    this.header = null;
    this.codes = null;
    this.numeric = null;
    this.ncat = 0;
    this.field = "";
    this.sizeField = "";
    this.w = null;
    this.inView = null;
    this.context = false;
    this.outline = [];
    this.hovered = -1;
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
    this.sel = new Uint8Array(n);
    this.selCount = 0;
    this.inViewCount = n;
    // the hover grid is of the points drawn before: built again after the first frame
    this.cellStart = new Uint32Array(0);
    this.cellPoints = new Uint32Array(0);
    this.empty.textContent = "";
    if (this.sp && this.fast !== n > FAST_ABOVE) {
      this.sp.destroy();
      this.sp = null;
      // a fresh canvas, so the new plot gets a WebGL context of its own
      const fresh = this.canvas.cloneNode() as HTMLCanvasElement;
      this.canvas.replaceWith(fresh);
      this.canvas = fresh;
    }
    this.fast = n > FAST_ABOVE;
    const sp = this.ensure();
    this.setMode(this.mode);
    this.baseSize = n < 5_000 ? 6 : n < 50_000 ? 4 : n < 300_000 ? 2.5 : 1.5;
    sp.set({ pointSize: this.baseSize, opacity: n < 50_000 ? 0.9 : 0.6, colorBy: null, sizeBy: null, pointColor: BASE });
    await sp.draw({ x: this.xs, y: this.ys });
    this.timings.drawn = performance.now();
    // resolves on the frame drawn with the new camera: the first frame of this run (no further redraw, which
    // would cost another full draw, about a second for a million points in software GL)
    await sp.zoomToArea({ x: -1, y: -1, width: 2, height: 2 });
    this.timings.firstFrame = performance.now();
    this.buildIndex();
    this.drawOverlay();
    this.thumbs.invalidate();
  }

  fit(): void {
    this.sp?.zoomToArea({ x: -1, y: -1, width: 2, height: 2 }, { transition: true });
  }

  /** Colour the points by `path` (one of the run's colour fields); "" for one colour. */
  async colorBy(path: string): Promise<void> {
    const key = this.key;
    if (!key || !this.sp) return;
    this.field = path;
    const hadHidden = this.hidden.size > 0;
    this.hidden.clear();
    if (!path) {
      this.header = null;
      this.codes = null;
      this.numeric = null;
      this.ncat = 0;
    } else {
      const { header, buf } = await this.fetchValues(key, path);
      if (this.key !== key || this.field !== path) return;
      this.header = header;
      if (header.kind === "categorical") {
        this.codes = header.dtype === "<u2" ? new Uint16Array(buf) : new Uint8Array(buf);
        this.numeric = null;
        this.ncat = header.categories?.length ?? 0;
      } else {
        // ten bins of the range, the eleventh for missing values
        const values = new Float32Array(buf);
        const lo = header.min ?? 0;
        const span = (header.max ?? 1) - lo || 1;
        const codes = new Uint8Array(this.count);
        for (let i = 0; i < this.count; i++) {
          codes[i] = Number.isFinite(values[i]) ? Math.min(9, Math.floor(((values[i] - lo) / span) * 10)) : 10;
        }
        this.codes = codes;
        this.numeric = values;
        this.ncat = 10;
      }
    }
    await this.redraw();
    this.renderLegend();
    this.applyFilter();
    this.thumbs.invalidate();
    if (hadHidden) this.events.shown();
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

  /** The colours by code: the categories (or bins), then missing, then context; dimmed when there is a
   * selection (the selected points are drawn on top in their own colour). */
  private palette(): string[] {
    const base = this.header
      ? this.header.kind === "numeric" ? VIRIDIS : Array.from({ length: this.ncat }, (_, i) => PALETTE[i % PALETTE.length])
      : [BASE];
    const all = [...base, MISSING, CONTEXT];
    return this.selCount ? all.map((c, i) => (i === all.length - 1 ? c : mix(c, BACKGROUND, DIM))) : all;
  }

  /** The code of each point for the colour texture: its category, missing, or context. */
  private zCodes(): Float32Array {
    const n = this.count;
    const z = new Float32Array(n);
    const codes = this.codes;
    const missing = this.header ? this.ncat : 1;
    const context = missing + 1;
    const inView = this.context ? this.inView : null;
    for (let i = 0; i < n; i++) {
      if (inView && !inView[i]) z[i] = context;
      else if (codes) z[i] = codes[i] < this.ncat ? codes[i] : missing;
    }
    return z;
  }

  /** Draw the points again with the current colour codes and sizes, keeping the selection. */
  private async redraw(): Promise<void> {
    const sp = this.sp;
    if (!sp) return;
    const spatialIndex = sp.get("spatialIndex");
    this.suppress++;
    try {
      await sp.draw(
        { x: this.xs, y: this.ys, z: this.zCodes(), ...(this.w ? { w: this.w } : {}) },
        { zDataType: "categorical", wDataType: "continuous", spatialIndex },
      );
      const size = this.baseSize;
      sp.set({
        colorBy: "valueA",
        pointColor: this.palette(),
        sizeBy: this.w ? "valueB" : null,
        pointSize: this.w ? Array.from({ length: 8 }, (_, i) => size * (0.5 + i * 0.5)) : size,
      });
      this.showSelection();
    } finally {
      this.suppress--;
    }
  }

  // ---------------------------------------------------------------- view, legend and selection masks

  /** The points in the page's view (mask: one byte per point, null: all). A few-point view (`ranked`:
   * what an action, a similarity search or a limit made) of at most CONTEXT_MAX points keeps the other
   * points as dimmed context and zooms to its own; other views hide them. */
  async setMask(mask: Uint8Array | null, ranked = false): Promise<void> {
    const full = !mask || mask.length !== this.count || !mask.includes(0);
    this.inView = full ? null : mask;
    let n = this.count;
    if (this.inView) {
      n = 0;
      for (let i = 0; i < this.count; i++) n += this.inView[i];
    }
    this.inViewCount = n;
    const context = ranked && !!this.inView && n <= CONTEXT_MAX && n < this.count / 2;
    const redraw = context || this.context;
    this.context = context;
    // a selection outside the view is no longer selectable
    if (this.inView && this.selCount) {
      for (let i = 0; i < this.count; i++) if (!this.inView[i]) this.sel[i] = 0;
      this.selCount = countOnes(this.sel);
    }
    if (redraw) await this.redraw();
    this.applyFilter();
    this.thumbs.invalidate();
    this.updateLegendCounts();
    if (context && n) {
      const shown = this.shownIndices(true);
      if (shown.length) await this.sp?.zoomToPoints(Array.from(shown), { padding: 0.25, transition: false });
    }
  }

  /** One byte per point that may be selected and is drawn: in the view, of a class the legend shows. */
  private selectable(): Uint8Array | null {
    const codes = this.codes;
    const hide = codes && this.hidden.size ? this.hidden : null;
    if (!this.inView && !hide) return null;
    const ok = new Uint8Array(this.count);
    for (let i = 0; i < this.count; i++) {
      ok[i] = (!this.inView || this.inView[i]) && !(hide && hide.has(codes![i])) ? 1 : 0;
    }
    return ok;
  }

  /** Indices of the points shown (`view`: only those in the view, not the dimmed context). */
  shownIndices(view = false): Uint32Array {
    const codes = this.codes;
    const hide = codes && this.hidden.size ? this.hidden : null;
    const inView = view || !this.context ? this.inView : null;
    const out: number[] = [];
    for (let i = 0; i < this.count; i++) {
      if ((inView && !inView[i]) || (hide && hide.has(codes![i]))) continue;
      out.push(i);
    }
    return Uint32Array.from(out);
  }

  /** One bit per point of the classes the legend shows (null: it hides none), least significant first. */
  shownBits(): Uint8Array | null {
    const codes = this.codes;
    if (!codes || !this.hidden.size) return null;
    const bits = new Uint8Array((this.count + 7) >> 3);
    for (let i = 0; i < this.count; i++) if (!this.hidden.has(codes[i])) bits[i >> 3] |= 1 << (i & 7);
    return bits;
  }

  private applyFilter(): void {
    const sp = this.sp;
    if (!sp || !this.count) return;
    const hides = (!this.context && this.inView) || (this.codes && this.hidden.size);
    this.suppress++;
    try {
      if (!hides) {
        if (sp.get("isPointsFiltered")) sp.unfilter({ preventEvent: true });
      } else {
        sp.filter(Array.from(this.shownIndices()), { preventEvent: true });
      }
      this.showSelection();
    } finally {
      this.suppress--;
    }
  }

  /** Select `indices` (replace, add to, remove from or toggle in the selection), as the user did. */
  selectPoints(indices: Uint32Array, how: "replace" | "add" | "remove" | "toggle", outline: [number, number][] = []): void {
    const sel = this.sel;
    if (how === "replace") {
      sel.fill(0);
      this.selCount = 0;
    }
    // the count follows the bytes that change: O(indices), not a pass over every point
    let n = this.selCount;
    for (let k = 0; k < indices.length; k++) {
      const i = indices[k];
      const was = sel[i];
      const now = how === "remove" ? 0 : how === "toggle" ? was ^ 1 : 1;
      sel[i] = now;
      n += now - was;
    }
    this.selCount = n;
    this.outline = how === "replace" || how === "add" ? outline : [];
    this.timings.selected = performance.now();
    this.userSelected();
  }

  clearSelection(byUser: boolean): void {
    if (!this.selCount && !this.outline.length) return;
    this.sel.fill(0);
    this.selCount = 0;
    this.outline = [];
    if (byUser) this.userSelected();
    else this.afterSelection();
  }

  /** Counts, legend and outline now; the server is told; the points are drawn once its answer (and the
   * grid's first rows) are in, and the frame showing those rows is on screen: redrawing a million points
   * in software GL takes a second or more, and a frame waits for its WebGL work, so drawing them in the
   * rows' frame would hold the rows back by as long. */
  private userSelected(): void {
    const seq = ++this.drawSeq;
    // the grid's first rows are asked for first (selected() sends that request before it yields); the
    // legend's counts, a pass over every point, are made while the server answers
    const selected = this.events.selected();
    this.afterSelection(false);
    void Promise.resolve(selected).finally(() => {
      // rAF runs before the next frame is painted; a task queued from it runs after that paint
      requestAnimationFrame(() => setTimeout(() => {
        if (seq === this.drawSeq) this.drawSelection();
      }, 0));
    });
  }

  /** Show `indices` as the selection (it came from the server: tiles clicked, Python), reporting nothing. */
  setSelection(indices: ArrayLike<number>): void {
    this.sel.fill(0);
    for (let k = 0; k < indices.length; k++) this.sel[indices[k]] = 1;
    this.selCount = indices.length ? countOnes(this.sel) : 0;
    this.outline = [];
    this.afterSelection();
  }

  private afterSelection(draw = true): void {
    this.thumbs.invalidate();
    this.events.counts(this.selCount, false);
    this.updateLegendCounts();
    this.drawOverlay();
    if (draw) {
      this.drawSeq++;
      this.drawSelection();
    }
  }

  /** The selection in the WebGL plot: unselected points dimmed, the selected drawn on top. */
  private drawSelection(): void {
    const sp = this.sp;
    if (!sp) return;
    this.suppress++;
    try {
      sp.set({ pointColor: this.palette() });
      this.showSelection();
    } finally {
      this.suppress--;
    }
  }

  private showSelection(): void {
    const sp = this.sp;
    if (!sp) return;
    if (this.selCount) sp.select(Array.from(this.selectedIndices()), { preventEvent: true });
    else if ((sp.get("selectedPoints") as number[]).length) sp.deselect({ preventEvent: true });
  }

  selectedIndices(): Uint32Array {
    const out = new Uint32Array(this.selCount);
    let k = 0;
    for (let i = 0; i < this.count && k < out.length; i++) if (this.sel[i]) out[k++] = i;
    return out;
  }

  /** The selection as one bit per point, least significant first (what the server's bitmask route reads). */
  selectedBits(): Uint8Array {
    const bits = new Uint8Array((this.count + 7) >> 3);
    for (let i = 0; i < this.count; i++) if (this.sel[i]) bits[i >> 3] |= 1 << (i & 7);
    return bits;
  }

  // ---------------------------------------------------------------- legend

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
    const entries = cats.map((c, i) => ({ code: i, name: String(c) }));
    if (h.missing) entries.push({ code: h.missing_code ?? cats.length, name: "(none)" });
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
      count.className = "muted count";
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
    this.updateLegendCounts();
  }

  /** Per class: "selected / in view" while there is a selection, else "in view". */
  private updateLegendCounts(): void {
    const codes = this.codes;
    if (!codes || this.header?.kind !== "categorical") return;
    const size = this.ncat + 1;
    const inView = new Float64Array(size);
    const selected = new Float64Array(size);
    const mask = this.inView;
    for (let i = 0; i < this.count; i++) {
      if (mask && !mask[i]) continue;
      const c = Math.min(codes[i], this.ncat);
      inView[c]++;
      selected[c] += this.sel[i];
    }
    for (const el of this.legend.querySelectorAll<HTMLElement>(".legend-item")) {
      const c = Math.min(Number(el.dataset.code), this.ncat);
      const count = el.querySelector<HTMLElement>(".count");
      el.dataset.selected = String(selected[c]);
      el.dataset.inView = String(inView[c]);
      if (count) {
        count.textContent = this.selCount
          ? `${selected[c].toLocaleString()} / ${inView[c].toLocaleString()}`
          : inView[c].toLocaleString();
      }
    }
  }

  toggleClass(code: number): void {
    if (this.hidden.has(code)) this.hidden.delete(code);
    else this.hidden.add(code);
    this.afterLegend();
  }

  isolateClass(code: number, all: number[]): void {
    const isolated = !this.hidden.has(code) && this.hidden.size === all.length - 1;
    this.hidden = isolated ? new Set() : new Set(all.filter((c) => c !== code));
    this.afterLegend();
  }

  /** The names of the classes the legend hides. */
  hiddenNames(): string[] {
    const cats = this.header?.categories ?? [];
    return [...this.hidden].map((c) => (c < cats.length ? String(cats[c]) : "(none)"));
  }

  /** Hide the classes in `names` (as the legend names them), e.g. from the page's address. */
  hideByName(names: string[]): void {
    const want = new Set(names);
    this.hidden = new Set(
      [...this.legend.querySelectorAll<HTMLElement>(".legend-item")]
        .filter((el) => want.has(el.dataset.name ?? ""))
        .map((el) => Number(el.dataset.code)),
    );
    this.afterLegend();
  }

  private afterLegend(): void {
    for (const el of this.legend.querySelectorAll<HTMLElement>(".legend-item")) {
      el.classList.toggle("off", this.hidden.has(Number(el.dataset.code)));
    }
    this.applyFilter();
    this.thumbs.invalidate();
    this.events.shown();
  }

  // ---------------------------------------------------------------- images in the plot

  /** "Images in plot" on or off (the toggle in the plot's corner does the same). */
  setImagesInPlot(on: boolean): void {
    this.imagesToggle.checked = on;
    this.thumbs.setEnabled(on);
    try {
      localStorage.setItem(IMAGES_KEY, on ? "1" : "0");
    } catch {
      /* storage refused: the choice lasts for this page */
    }
  }

  private makeImagesToggle(box: HTMLElement): HTMLInputElement {
    const label = document.createElement("label");
    label.id = "plot-images";
    label.title = `zoom in until at most ${THUMB_BUDGET} points are on screen to see their images`;
    label.style.cssText = "position:absolute;right:6px;top:6px;z-index:2;display:flex;gap:4px;align-items:center;"
      + "font-size:11px;padding:2px 6px;border-radius:4px;background:rgba(20,22,27,0.8);user-select:none;";
    const input = document.createElement("input");
    input.type = "checkbox";
    let on = true;
    try {
      on = localStorage.getItem(IMAGES_KEY) !== "0";
    } catch {
      /* default on */
    }
    input.checked = on;
    this.thumbs.setEnabled(on);
    input.addEventListener("change", () => this.setImagesInPlot(input.checked));
    label.append(input, document.createTextNode("Images in plot"));
    box.appendChild(label);
    return input;
  }

  /** Points shown (in the view, of a class the legend shows) inside [x0, x1] x [y0, y1] (normalised), by
   * the hover grid's cells; null as soon as there are more than `limit`. */
  private pointsIn(x0: number, y0: number, x1: number, y1: number, limit: number): Uint32Array | null {
    if (!this.count || !this.cellStart.length) return null;
    const cell = 2 / GRID;
    const c0 = Math.max(0, Math.floor((x0 + 1) / cell));
    const c1 = Math.min(GRID - 1, Math.floor((x1 + 1) / cell));
    const r0 = Math.max(0, Math.floor((y0 + 1) / cell));
    const r1 = Math.min(GRID - 1, Math.floor((y1 + 1) / cell));
    const codes = this.codes;
    const hide = codes && this.hidden.size ? this.hidden : null;
    const inView = this.inView;
    const out: number[] = [];
    for (let row = r0; row <= r1; row++) {
      for (let col = c0; col <= c1; col++) {
        const c = row * GRID + col;
        for (let k = this.cellStart[c]; k < this.cellStart[c + 1]; k++) {
          const i = this.cellPoints[k];
          const x = this.xs[i];
          const y = this.ys[i];
          if (x < x0 || x > x1 || y < y0 || y > y1 || (inView && !inView[i]) || (hide && hide.has(codes![i]))) continue;
          if (out.length >= limit) return null;
          out.push(i);
        }
      }
    }
    return Uint32Array.from(out);
  }

  /** The colour point i is drawn in, undimmed. */
  private colorOf(i: number): string {
    const codes = this.codes;
    if (!this.header || !codes) return BASE;
    const c = codes[i];
    if (c >= this.ncat) return MISSING;
    return this.header.kind === "numeric" ? VIRIDIS[c] : PALETTE[c % PALETTE.length];
  }

  /** The camera's view matrix as a map from normalised coordinates to the panel's CSS pixels. */
  private viewMap(v: Float32Array): ViewMap {
    const w = this.boxW;
    const h = this.boxH;
    const aspect = w / h;
    // clip = projection(1/aspect, 1) * view * [x, y, 0, 1] (as in clip()), then clip -> pixels
    return {
      a: (w / 2) * (v[0] / aspect), b: (w / 2) * (v[4] / aspect), e: (w / 2) * (v[12] / aspect + 1),
      c: (-h / 2) * v[1], d: (-h / 2) * v[5], f: (h / 2) * (1 - v[13]),
      width: w, height: h,
    };
  }

  // ---------------------------------------------------------------- coordinates (test hooks, bench)

  private clip(): { a: number; b: number; c: number; d: number; tx: number; ty: number; rect: DOMRect } {
    const rect = this.canvas.getBoundingClientRect();
    const v = this.ensure().get("cameraView") as Float32Array;
    const aspect = rect.width / rect.height;
    // clip = projection(1/aspect, 1) * view * [x, y, 0, 1]; the view of a 2-D camera is affine.
    return { a: v[0] / aspect, b: v[4] / aspect, c: v[1], d: v[5], tx: v[12] / aspect, ty: v[13], rect };
  }

  /** Normalised plot coordinates (those drawn) under the page pixel (clientX, clientY). */
  private toNorm(clientX: number, clientY: number): [number, number] {
    const { a, b, c, d, tx, ty, rect } = this.clip();
    const nx = -1 + (2 * (clientX - rect.left)) / rect.width - tx;
    const ny = 1 - (2 * (clientY - rect.top)) / rect.height - ty;
    const det = a * d - b * c;
    return [(d * nx - b * ny) / det, (a * ny - c * nx) / det];
  }

  private normToPage(xn: number, yn: number): [number, number] {
    const { a, b, c, d, tx, ty, rect } = this.clip();
    const nx = a * xn + b * yn + tx;
    const ny = c * xn + d * yn + ty;
    return [rect.left + ((nx + 1) / 2) * rect.width, rect.top + ((1 - ny) / 2) * rect.height];
  }

  /** Data coordinates under the page pixel (clientX, clientY). */
  toData(clientX: number, clientY: number): [number, number] {
    const [x, y] = this.toNorm(clientX, clientY);
    return [x * this.s + this.cx, y * this.s + this.cy];
  }

  /** Page pixel of the data point (x, y). */
  toPage(x: number, y: number): [number, number] {
    return this.normToPage((x - this.cx) / this.s, (y - this.cy) / this.s);
  }

  /** The last lasso polygon in data coordinates. */
  lassoData(): [number, number][] {
    return this.outline.map(([x, y]) => [x * this.s + this.cx, y * this.s + this.cy]);
  }

  selectedPoints(): number[] {
    return Array.from(this.selectedIndices());
  }

  /** Indices of the points shown in the view's colours (not hidden by the legend, in the view). */
  visiblePoints(): number[] {
    return this.sp && this.count ? Array.from(this.shownIndices(true)) : [];
  }

  /** Indices of every point drawn, the dimmed context of a few-point view included. */
  drawnPoints(): number[] {
    return this.sp && this.count ? Array.from(this.shownIndices()) : [];
  }

  dataPoint(i: number): [number, number] {
    return [this.raw[2 * i], this.raw[2 * i + 1]];
  }
}

function rectangle(a: [number, number], b: [number, number]): [number, number][] {
  return [a, [b[0], a[1]], b, [a[0], b[1]]];
}

/** The hover grid: the points of cell c are points[start[c]:start[c + 1]], GRID x GRID cells over [-1, 1]^2. */
interface Cells {
  start: Uint32Array;
  points: Uint32Array;
}

/** The row or column of the hover grid that normalised coordinate `v` falls in (outside [-1, 1]: the edge). */
function gridCell(v: number): number {
  return Math.min(GRID - 1, Math.max(0, Math.floor(((v + 1) / 2) * GRID)));
}

/** Indices of the points inside `poly` (even-odd rule), among those `ok` allows (null: all): ascending
 * without `cells`, else in the cells' order. */
export function pointsInside(xs: Float32Array, ys: Float32Array, poly: [number, number][], ok: Uint8Array | null,
                             cells: Cells | null = null): Uint32Array {
  const out = new Uint32Array(xs.length);
  return out.slice(0, scanInside(xs, ys, poly, ok, cells, out));
}

/** How many points are inside `poly` (as pointsInside), writing their indices to `out` unless it is null.
 *
 * With `cells`, only the cells under the polygon's bounding box are visited (gridCell is monotonic: a point
 * inside that box is in one of them), and a cell that no edge comes near is taken or left whole: every point
 * in it is on the same side as its centre, so the test of each point would give the centre's answer (see
 * clearOfEdges). Only the points of the cells the outline crosses are tested one by one. */
function scanInside(xs: Float32Array, ys: Float32Array, poly: [number, number][], ok: Uint8Array | null,
                    cells: Cells | null, out: Uint32Array | null): number {
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  const m = poly.length;
  const px = new Float64Array(m);
  const py = new Float64Array(m);
  for (let k = 0; k < m; k++) {
    px[k] = poly[k][0];
    py[k] = poly[k][1];
    x0 = Math.min(x0, px[k]); x1 = Math.max(x1, px[k]);
    y0 = Math.min(y0, py[k]); y1 = Math.max(y1, py[k]);
  }
  const insidePoly = (x: number, y: number): boolean => {
    let inside = false;
    for (let k = 0, j = m - 1; k < m; j = k++) {
      if ((py[k] > y) !== (py[j] > y) && x < ((px[j] - px[k]) * (y - py[k])) / (py[j] - py[k]) + px[k]) inside = !inside;
    }
    return inside;
  };
  let n = 0;
  const test = (i: number): void => {
    const x = xs[i];
    const y = ys[i];
    if (x < x0 || x > x1 || y < y0 || y > y1 || (ok && !ok[i]) || !insidePoly(x, y)) return;
    if (out) out[n] = i;
    n++;
  };
  if (!cells || !(m > 0)) {
    for (let i = 0; i < xs.length; i++) test(i);
    return n;
  }
  const { start, points } = cells;
  const c0 = gridCell(x0), c1 = gridCell(x1);
  for (let row = gridCell(y0), r1 = gridCell(y1); row <= r1; row++) {
    for (let col = c0; col <= c1; col++) {
      const a = start[row * GRID + col];
      const b = start[row * GRID + col + 1];
      if (a === b) continue;
      if (!clearOfEdges(row, col, px, py)) {
        for (let k = a; k < b; k++) test(points[k]);
      } else if (insidePoly(-1 + (col + 0.5) * CELL, -1 + (row + 0.5) * CELL)) {
        if (ok) {
          for (let k = a; k < b; k++) {
            const i = points[k];
            if (!ok[i]) continue;
            if (out) out[n] = i;
            n++;
          }
        } else {
          if (out) out.set(points.subarray(a, b), n);
          n += b - a;
        }
      }
    }
  }
  return n;
}

/** Side of a cell of the hover grid, in normalised coordinates. */
const CELL = 2 / GRID;
/** Margin around a cell that an edge must keep (far above the rounding of coordinates of order 1). */
const CLEAR = 1e-9;

/** Whether no edge of the polygon (px, py) comes within CLEAR of cell (row, col) (an inner cell: the edge
 * cells also hold the points beyond [-1, 1]). Then every point in the cell is on the same side of the outline:
 * an edge above or below the cell never meets a point's rightward ray, one to its left never, and one to its
 * right meets it at an x beyond the cell, so the crossings only change with y at vertices to the right, where
 * the half-open rule keeps their parity; the test of each point in the cell gives its centre's answer. */
function clearOfEdges(row: number, col: number, px: Float64Array, py: Float64Array): boolean {
  if (row === 0 || col === 0 || row === GRID - 1 || col === GRID - 1) return false;
  const cx0 = -1 + col * CELL - CLEAR, cx1 = -1 + (col + 1) * CELL + CLEAR;
  const cy0 = -1 + row * CELL - CLEAR, cy1 = -1 + (row + 1) * CELL + CLEAR;
  for (let k = 0, j = px.length - 1; k < px.length; j = k++) {
    if (Math.max(px[k], px[j]) >= cx0 && Math.min(px[k], px[j]) <= cx1 &&
        Math.max(py[k], py[j]) >= cy0 && Math.min(py[k], py[j]) <= cy1) return false;
  }
  return true;
}

function countOnes(a: Uint8Array): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) n += a[i];
  return n;
}

/** Colour `a` moved a fraction `t` of the way to `b` (both "#rrggbb"). */
function mix(a: string, b: string, t: number): string {
  const pa = [1, 3, 5].map((k) => parseInt(a.slice(k, k + 2), 16));
  const pb = [1, 3, 5].map((k) => parseInt(b.slice(k, k + 2), 16));
  return "#" + pa.map((v, k) => Math.round(v + (pb[k] - v) * t).toString(16).padStart(2, "0")).join("");
}

/** `values` scaled to [0, 1] by the header's min and max into `out`; missing values become 0. */
function unitScale(values: Float32Array, header: ValuesHeader, out: Float32Array): void {
  const lo = header.min ?? 0;
  const span = (header.max ?? 1) - lo || 1;
  for (let i = 0; i < values.length; i++) out[i] = Number.isFinite(values[i]) ? (values[i] - lo) / span : 0;
}

export function fmt(x: number | null | undefined): string {
  if (x === null || x === undefined) return "";
  return Number.isInteger(x) ? String(x) : x.toPrecision(3);
}
