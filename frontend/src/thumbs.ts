// Images in the plot: each visible point's thumbnail drawn at its position once the user has zoomed in so
// far that few points are on screen (level of detail: dots when zoomed out, images when zoomed in).
//
// The images go on a 2-D canvas between the WebGL canvas and the lasso overlay, redrawn from
// regl-scatterplot's "drawing" event: it is published synchronously inside the library's render frame
// (its "view" and "draw" events are published a task later), so the images move in the same frame as the
// points and pan/zoom stays smooth. Thumbnails load lazily from /media/thumb/{sample_id}, a few requests at
// a time, nearest the centre of the view first; a request whose point has left the view is aborted; decoded
// bitmaps are cached by point id (least recently used dropped first).
//
// In an object-level run each point is an object: its image is the crop of its sample's thumbnail by the
// object's box (relative [x, y, w, h], as the grid draws it over the same thumbnail), cut when decoding.

import { getJSON, requestHeaders } from "./api";

/** At most this many points on screen for images to be drawn (more: dots only). At ~30 px an image, 300
 * of them cover about a third of a 1000 x 800 panel, so a zoomed-in cluster stays readable, and drawing
 * them is a few milliseconds of a 2-D canvas even in software. */
export const THUMB_BUDGET = 300;
/** Image edge in CSS pixels: side = clamp(FILL * sqrt(panel area / points on screen), MIN_SIDE, MAX_SIDE),
 * so images grow as the user zooms further in and fewer points share the panel. */
const FILL = 0.6;
const MIN_SIDE = 24;
const MAX_SIDE = 96;
/** Requests in flight at once (the browser allows six per host; the grid and the API need the rest). */
const MAX_IN_FLIGHT = 4;
/** Bitmaps kept decoded, at most DECODE_PX wide: 2,000 x 96 x 96 x 4 bytes = 74 MB at most. */
const CACHE_MAX = 2000;
const DECODE_PX = 96;
/** Runs up to this many points fetch every point's sample id at once (/ids: ~60 bytes of JSON a point);
 * larger ones ask per point (/point/{i}) for the points being shown. */
const IDS_AT_ONCE_MAX = 200_000;

/** What a point's image is: its sample's thumbnail, cropped by `box` for an object; cached under `key`. */
interface PointRef {
  /** The point's own id: the sample's, or the object's in an object-level run. */
  key: string;
  sampleId: string;
  /** An object's box, relative [x, y, w, h]; null for a sample (or an object without a box). */
  box: number[] | null;
}

/** The /ids answer: every point's id, its sample's id, and an object-level run's boxes. */
interface RunIds {
  keys: string[];
  sample_ids: string[];
  boxes?: (number[] | null)[];
}

/** What the layer needs from the plot, read on every frame. */
export interface ThumbSource {
  /** Run key, or null when no run is open. */
  key(): string | null;
  count(): number;
  /** Normalised coordinates of point i (those drawn by the scatterplot). */
  xy(i: number): [number, number];
  /** Indices of the points shown inside [x0, x1] x [y0, y1] (normalised), or null if more than `limit`. */
  pointsIn(x0: number, y0: number, x1: number, y1: number, limit: number): Uint32Array | null;
  /** The colour point i is drawn in ("#rrggbb"), for the image's frame. */
  colorOf(i: number): string;
  /** 1 if point i is selected, 0 if not, -1 if there is no selection. */
  selectedState(i: number): number;
}

/** The affine map from normalised coordinates to canvas CSS pixels: px = a x + b y + e, py = c x + d y + f. */
export interface ViewMap {
  a: number;
  b: number;
  c: number;
  d: number;
  e: number;
  f: number;
  width: number;
  height: number;
}

export interface ThumbStats {
  /** "images" when the last frame drew images, "dots" otherwise (too many points, toggled off, no run). */
  mode: "images" | "dots" | "off";
  /** Points on screen in the last frame (null: more than the budget). */
  onScreen: number | null;
  /** Images drawn in the last frame. */
  drawn: number;
  side: number;
  requested: number;
  loaded: number;
  missing: number;
  aborted: number;
  inFlight: number;
  maxInFlight: number;
  /** Indices of the points whose images the last frame drew (a test hook). */
  drawnIndices: number[];
  /** Milliseconds the layer spent drawing its last frame, and over every frame since the last reset. */
  lastDrawMs: number;
  drawMs: number;
  frames: number;
}

type Entry = ImageBitmap | "missing";

export class ThumbLayer {
  readonly canvas: HTMLCanvasElement;
  private enabled = true;
  private view: ViewMap | null = null;
  private readonly cache = new Map<string, Entry>();
  private readonly inFlight = new Map<number, AbortController>();
  private queue: number[] = [];
  private wanted = new Set<number>();
  private ids: RunIds | null = null;
  private idsPromise: Promise<RunIds | null> | null = null;
  private readonly pointRefs = new Map<number, PointRef>();
  private runKey: string | null = null;
  private generation = 0;
  private frame = 0;
  stats: ThumbStats = ThumbLayer.freshStats();

  constructor(private readonly src: ThumbSource, box: HTMLElement, before: HTMLElement) {
    this.canvas = document.createElement("canvas");
    this.canvas.id = "plot-thumbs";
    this.canvas.style.cssText = "position:absolute;left:0;top:0;pointer-events:none;";
    box.insertBefore(this.canvas, before);
  }

  private static freshStats(): ThumbStats {
    return { mode: "dots", onScreen: null, drawn: 0, side: 0, requested: 0, loaded: 0, missing: 0, aborted: 0,
             inFlight: 0, maxInFlight: 0, drawnIndices: [], lastDrawMs: 0, drawMs: 0, frames: 0 };
  }

  get on(): boolean {
    return this.enabled;
  }

  /** Images in the plot on or off (off: dots only, pending requests aborted). */
  setEnabled(on: boolean): void {
    this.enabled = on;
    this.render();
  }

  resetTimings(): void {
    this.stats.drawMs = 0;
    this.stats.frames = 0;
  }

  size(width: number, height: number): void {
    const dpr = window.devicePixelRatio || 1;
    this.canvas.width = Math.max(1, Math.round(width * dpr));
    this.canvas.height = Math.max(1, Math.round(height * dpr));
    this.canvas.style.width = `${width}px`;
    this.canvas.style.height = `${height}px`;
    this.render();
  }

  /** The camera moved or the points changed: draw with `view` (called from the scatterplot's frame). */
  draw(view: ViewMap): void {
    this.view = view;
    this.render();
  }

  /** Draw again soon (an image arrived, the selection or the legend changed), at most once a frame. */
  invalidate(): void {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  private render(): void {
    const t0 = performance.now();
    const ctx = this.canvas.getContext("2d");
    if (!ctx) return;
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    const key = this.src.key();
    if (key !== this.runKey) this.newRun(key);
    const shown = this.enabled && key ? this.visible() : null;
    this.stats.onScreen = shown ? shown.length : null;
    this.stats.mode = !this.enabled ? "off" : shown ? "images" : "dots";
    this.stats.drawn = 0;
    this.stats.drawnIndices = [];
    this.request(shown ?? new Uint32Array(0));
    if (shown && shown.length && this.view) this.paint(ctx, shown, this.view);
    const ms = performance.now() - t0;
    this.stats.lastDrawMs = ms;
    this.stats.drawMs += ms;
    this.stats.frames++;
  }

  /** The points on screen (a margin of half an image around it), or null if more than THUMB_BUDGET. */
  private visible(): Uint32Array | null {
    const v = this.view;
    if (!v || !this.src.count()) return null;
    const det = v.a * v.d - v.b * v.c;
    if (!det) return null;
    const margin = MAX_SIDE / 2;
    const corners = [[-margin, -margin], [v.width + margin, -margin], [-margin, v.height + margin],
                     [v.width + margin, v.height + margin]].map(([px, py]) => {
      const x = px - v.e;
      const y = py - v.f;
      return [(v.d * x - v.b * y) / det, (v.a * y - v.c * x) / det];
    });
    const xs = corners.map((c) => c[0]);
    const ys = corners.map((c) => c[1]);
    return this.src.pointsIn(Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys), THUMB_BUDGET);
  }

  private paint(ctx: CanvasRenderingContext2D, shown: Uint32Array, v: ViewMap): void {
    const side = Math.round(Math.min(MAX_SIDE, Math.max(MIN_SIDE, FILL * Math.sqrt((v.width * v.height) / Math.max(1, shown.length)))));
    this.stats.side = side;
    // unselected images first, selected ones on top; dimmed while there is a selection
    const order = Array.from(shown).sort((i, j) => this.src.selectedState(i) - this.src.selectedState(j));
    for (const i of order) {
      const key = this.refNow(i)?.key;
      const img = key ? this.cache.get(key) : undefined;
      if (!img || img === "missing") continue;
      // touch: most recently used last
      this.cache.delete(key!);
      this.cache.set(key!, img);
      const [x, y] = this.src.xy(i);
      const px = v.a * x + v.b * y + v.e;
      const py = v.c * x + v.d * y + v.f;
      const scale = side / Math.max(img.width, img.height);
      const w = img.width * scale;
      const h = img.height * scale;
      const sel = this.src.selectedState(i);
      ctx.globalAlpha = sel === 0 ? 0.3 : 1;
      ctx.fillStyle = sel === 1 ? "#ffffff" : this.src.colorOf(i);
      ctx.fillRect(px - w / 2 - 2, py - h / 2 - 2, w + 4, h + 4);
      ctx.drawImage(img, px - w / 2, py - h / 2, w, h);
      this.stats.drawn++;
      this.stats.drawnIndices.push(i);
    }
    ctx.globalAlpha = 1;
  }

  // ---------------------------------------------------------------- loading

  private newRun(key: string | null): void {
    this.runKey = key;
    this.generation++;
    for (const c of this.inFlight.values()) c.abort();
    this.inFlight.clear();
    this.queue = [];
    this.wanted.clear();
    this.ids = null;
    this.idsPromise = null;
    this.pointRefs.clear();
  }

  /** Ask for the thumbnails of `shown` not yet cached, nearest the centre first; drop what left the view. */
  private request(shown: Uint32Array): void {
    this.wanted = new Set(shown);
    for (const [i, c] of this.inFlight) {
      if (!this.wanted.has(i)) {
        c.abort();
        this.inFlight.delete(i);
        this.stats.aborted++;
      }
    }
    const v = this.view;
    const todo: { i: number; d: number }[] = [];
    for (const i of shown) {
      if (this.inFlight.has(i)) continue;
      const key = this.refNow(i)?.key;
      if (key && this.cache.has(key)) continue;
      let d = 0;
      if (v) {
        const [x, y] = this.src.xy(i);
        d = Math.hypot(v.a * x + v.b * y + v.e - v.width / 2, v.c * x + v.d * y + v.f - v.height / 2);
      }
      todo.push({ i, d });
    }
    todo.sort((p, q) => p.d - q.d);
    this.queue = todo.map((t) => t.i);
    this.pump();
  }

  private pump(): void {
    while (this.inFlight.size < MAX_IN_FLIGHT && this.queue.length) {
      const i = this.queue.shift()!;
      if (!this.wanted.has(i) || this.inFlight.has(i)) continue;
      const ctrl = new AbortController();
      this.inFlight.set(i, ctrl);
      this.stats.requested++;
      this.stats.maxInFlight = Math.max(this.stats.maxInFlight, this.inFlight.size);
      void this.load(i, ctrl, this.generation).finally(() => {
        if (this.inFlight.get(i) === ctrl) this.inFlight.delete(i);
        this.stats.inFlight = this.inFlight.size;
        this.pump();
      });
    }
    this.stats.inFlight = this.inFlight.size;
  }

  private async load(i: number, ctrl: AbortController, generation: number): Promise<void> {
    try {
      const ref = await this.pointRef(i, ctrl.signal);
      if (!ref || generation !== this.generation || ctrl.signal.aborted) return;
      if (this.cache.has(ref.key)) {
        this.invalidate();
        return;
      }
      const res = await fetch(thumbUrl(ref.sampleId), { headers: requestHeaders(), signal: ctrl.signal });
      if (!res.ok || res.headers.get("X-Embedlens-Missing")) {
        this.remember(ref.key, "missing");
        this.stats.missing++;
        return;
      }
      const bmp = await decode(await res.blob(), ref.box);
      if (generation !== this.generation) {
        bmp.close();
        return;
      }
      this.remember(ref.key, bmp);
      this.stats.loaded++;
      this.invalidate();
    } catch (e) {
      // aborted (the point left the view), or an image the browser cannot decode: a dot stays
      if (!(e instanceof DOMException && e.name === "AbortError")) {
        const key = this.refNow(i)?.key;
        if (key) this.remember(key, "missing");
        this.stats.missing++;
      }
    }
  }

  private remember(sid: string, entry: Entry): void {
    this.cache.delete(sid);
    this.cache.set(sid, entry);
    while (this.cache.size > CACHE_MAX) {
      const oldest = this.cache.keys().next().value as string;
      const old = this.cache.get(oldest);
      if (old && old !== "missing") old.close();
      this.cache.delete(oldest);
    }
  }

  private refNow(i: number): PointRef | undefined {
    return this.ids ? refOf(this.ids, i) : this.pointRefs.get(i);
  }

  private async pointRef(i: number, signal: AbortSignal): Promise<PointRef | undefined> {
    const key = this.runKey;
    if (!key) return undefined;
    if (this.src.count() <= IDS_AT_ONCE_MAX) {
      if (!this.idsPromise) {
        const generation = this.generation;
        this.idsPromise = getJSON<RunIds>(`/api/points/${encodeURIComponent(key)}/ids`).then(
          (r) => {
            if (generation === this.generation) this.ids = r;
            return r;
          },
          // kept as failed until the next run: the points stay dots rather than asking again every frame
          () => null,
        );
      }
      const ids = await this.idsPromise;
      return ids ? refOf(ids, i) : undefined;
    }
    const known = this.pointRefs.get(i);
    if (known) return known;
    const res = await fetch(`/api/points/${encodeURIComponent(key)}/point/${i}`, { headers: requestHeaders(), signal });
    if (!res.ok) return undefined;
    const p = (await res.json()) as { id: string; sample_id: string; box?: number[] | null };
    const ref = { key: p.id, sampleId: p.sample_id, box: p.box ?? null };
    this.pointRefs.set(i, ref);
    return ref;
  }
}

function refOf(ids: RunIds, i: number): PointRef | undefined {
  const sampleId = ids.sample_ids[i];
  return sampleId === undefined ? undefined : { key: ids.keys[i], sampleId, box: ids.boxes?.[i] ?? null };
}

/** A thumbnail decoded at most DECODE_PX wide; with `box` (relative [x, y, w, h]), only that crop of it. */
async function decode(blob: Blob, box: number[] | null): Promise<ImageBitmap> {
  const opts: ImageBitmapOptions = { resizeWidth: DECODE_PX, resizeQuality: "medium" };
  if (!box) return createImageBitmap(blob, opts);
  const whole = await createImageBitmap(blob);
  try {
    const { width: w, height: h } = whole;
    const x0 = Math.min(w - 1, Math.max(0, Math.floor(box[0] * w)));
    const y0 = Math.min(h - 1, Math.max(0, Math.floor(box[1] * h)));
    const x1 = Math.min(w, Math.max(x0 + 1, Math.ceil((box[0] + box[2]) * w)));
    const y1 = Math.min(h, Math.max(y0 + 1, Math.ceil((box[1] + box[3]) * h)));
    return await createImageBitmap(whole, x0, y0, x1 - x0, y1 - y0, opts);
  } finally {
    whole.close();
  }
}

/** /media/thumb/{id}, with the page's token when it has one (an <img> cannot send headers; fetch sends both). */
function thumbUrl(sampleId: string): string {
  const token = new URLSearchParams(location.search).get("token");
  const q = token ? `?token=${encodeURIComponent(token)}` : "";
  return `/media/thumb/${encodeURIComponent(sampleId)}${q}`;
}
