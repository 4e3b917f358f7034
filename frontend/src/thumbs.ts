// Images in the plot: each visible point's thumbnail drawn at its position once the user has zoomed in so
// far that few points are on screen (level of detail: dots when zoomed out, images when zoomed in).
//
// The images go on a 2-D canvas between the WebGL canvas and the lasso overlay, redrawn from
// regl-scatterplot's "drawing" event: it is published synchronously inside the library's render frame
// (its "view" and "draw" events are published a task later), so the images move in the same frame as the
// points and pan/zoom stays smooth. Thumbnails load lazily from /media/thumb/{sample_id}, a few requests at
// a time, nearest the centre of the view first; a request whose point has left the view is aborted; decoded
// bitmaps are cached (least recently used dropped first).

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
  private ids: string[] | null = null;
  private idsPromise: Promise<string[] | null> | null = null;
  private readonly pointIds = new Map<number, string>();
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
      const sid = this.sampleIdNow(i);
      const img = sid ? this.cache.get(sid) : undefined;
      if (!img || img === "missing") continue;
      // touch: most recently used last
      this.cache.delete(sid!);
      this.cache.set(sid!, img);
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
    this.pointIds.clear();
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
      const sid = this.sampleIdNow(i);
      if (sid && this.cache.has(sid)) continue;
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
      const sid = await this.sampleId(i, ctrl.signal);
      if (!sid || generation !== this.generation || ctrl.signal.aborted) return;
      if (this.cache.has(sid)) {
        this.invalidate();
        return;
      }
      const res = await fetch(thumbUrl(sid), { headers: requestHeaders(), signal: ctrl.signal });
      if (!res.ok || res.headers.get("X-Embedlens-Missing")) {
        this.remember(sid, "missing");
        this.stats.missing++;
        return;
      }
      const blob = await res.blob();
      const bmp = await createImageBitmap(blob, { resizeWidth: DECODE_PX, resizeQuality: "medium" });
      if (generation !== this.generation) {
        bmp.close();
        return;
      }
      this.remember(sid, bmp);
      this.stats.loaded++;
      this.invalidate();
    } catch (e) {
      // aborted (the point left the view), or an image the browser cannot decode: a dot stays
      if (!(e instanceof DOMException && e.name === "AbortError")) {
        const sid = this.sampleIdNow(i);
        if (sid) this.remember(sid, "missing");
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

  private sampleIdNow(i: number): string | undefined {
    return this.ids ? this.ids[i] : this.pointIds.get(i);
  }

  private async sampleId(i: number, signal: AbortSignal): Promise<string | undefined> {
    const key = this.runKey;
    if (!key) return undefined;
    if (this.src.count() <= IDS_AT_ONCE_MAX) {
      if (!this.idsPromise) {
        const generation = this.generation;
        this.idsPromise = getJSON<{ sample_ids: string[] }>(`/api/points/${encodeURIComponent(key)}/ids`).then(
          (r) => {
            if (generation === this.generation) this.ids = r.sample_ids;
            return r.sample_ids;
          },
          // kept as failed until the next run: the points stay dots rather than asking again every frame
          () => null,
        );
      }
      const ids = await this.idsPromise;
      return ids ? ids[i] : undefined;
    }
    const known = this.pointIds.get(i);
    if (known) return known;
    const res = await fetch(`/api/points/${encodeURIComponent(key)}/point/${i}`, { headers: requestHeaders(), signal });
    if (!res.ok) return undefined;
    const sid = ((await res.json()) as { sample_id: string }).sample_id;
    this.pointIds.set(i, sid);
    return sid;
  }
}

/** /media/thumb/{id}, with the page's token when it has one (an <img> cannot send headers; fetch sends both). */
function thumbUrl(sampleId: string): string {
  const token = new URLSearchParams(location.search).get("token");
  const q = token ? `?token=${encodeURIComponent(token)}` : "";
  return `/media/thumb/${encodeURIComponent(sampleId)}${q}`;
}
