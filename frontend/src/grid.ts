// The image grid: virtualised (only the rows in sight are in the DOM), fed page by page from /api/samples.

import { getJSON, type SamplesPage, type Tile } from "./api";
import { boxOverlay } from "./boxes";

const PAGE = 120;
const MIN_TILE = 128;
const GAP = 6;
const CAPTION = 38;
const OVERSCAN_ROWS = 2;

/** Where the grid's pages come from, when not from the server's grid (GET /api/samples). */
export type PageSource = (offset: number, limit: number) => Promise<SamplesPage>;

export interface GridEvents {
  select(tile: Tile, additive: boolean): void;
  open(tile: Tile): void;
  error(message: string): void;
}

export class Grid {
  private readonly scroll: HTMLElement;
  private readonly spacer: HTMLElement;
  private readonly nodes = new Map<number, HTMLElement>();
  private pages = new Map<number, Tile[]>();
  private pending = new Set<number>();
  private generation = 0;
  private cols = 1;
  private tileW = MIN_TILE;
  private rowH = MIN_TILE + CAPTION + GAP;
  private frame = 0;
  private source: PageSource | null = null;
  total = 0;
  /** The tile the arrow keys move (-1: none), by its index in the grid. */
  focused = -1;
  /** performance.now() when the last reset() had its first rows in the DOM (read by tests and bench). */
  renderedAt = 0;

  constructor(
    scroll: HTMLElement,
    spacer: HTMLElement,
    private readonly events: GridEvents,
  ) {
    this.scroll = scroll;
    this.spacer = spacer;
    scroll.addEventListener("scroll", () => this.schedule(), { passive: true });
    new ResizeObserver(() => {
      this.layout();
      this.render(true);
    }).observe(scroll);
    this.layout();
  }

  /** Take pages from `source` (null: the server's grid) from the next reset() on. */
  setSource(source: PageSource | null): void {
    this.source = source;
  }

  /** Whether pages come from a source of the page's own (the plot's selection) rather than the server's grid. */
  get ownSource(): boolean {
    return this.source !== null;
  }

  /** Load the grid again from the server; `keepScroll` keeps the position (tags or selection changed). */
  async reset(keepScroll = false): Promise<void> {
    const gen = ++this.generation;
    this.pages = new Map();
    this.pending = new Set();
    if (!keepScroll) {
      this.scroll.scrollTop = 0;
      this.focused = -1;
    }
    const first = this.firstVisibleIndex();
    const page = Math.floor(first / PAGE);
    try {
      await this.load(page, gen);
    } catch (e) {
      this.events.error(String((e as Error).message || e));
      return;
    }
    if (gen !== this.generation) return;
    for (const node of this.nodes.values()) node.remove();
    this.nodes.clear();
    this.render(true);
    this.renderedAt = performance.now();
  }

  /** Ask for a page once; the grid renders again when it arrives. */
  private ensurePage(page: number): void {
    if (this.pages.has(page) || this.pending.has(page)) return;
    const gen = this.generation;
    this.load(page, gen).then(
      () => {
        if (gen === this.generation) this.schedule();
      },
      (e) => this.events.error(String((e as Error).message || e)),
    );
  }

  private async load(page: number, gen: number): Promise<void> {
    const pending = this.pending;
    pending.add(page);
    try {
      const res = this.source ? await this.source(page * PAGE, PAGE)
        : await getJSON<SamplesPage>(`/api/samples?offset=${page * PAGE}&limit=${PAGE}`);
      if (gen !== this.generation) return;
      this.pages.set(page, res.samples);
      if (res.total !== this.total) {
        this.total = res.total;
        this.layout();
      }
    } finally {
      pending.delete(page);
    }
  }

  private layout(): void {
    const width = Math.max(this.scroll.clientWidth - GAP, MIN_TILE);
    this.cols = Math.max(1, Math.floor((width + GAP) / (MIN_TILE + GAP)));
    this.tileW = Math.floor((width - GAP * (this.cols - 1)) / this.cols);
    this.rowH = this.tileW + CAPTION + GAP;
    const rows = Math.ceil(this.total / this.cols);
    this.spacer.style.height = `${rows * this.rowH}px`;
  }

  private firstVisibleIndex(): number {
    return Math.floor(this.scroll.scrollTop / this.rowH) * this.cols;
  }

  private schedule(): void {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render(false);
    });
  }

  private render(relayout: boolean): void {
    const top = this.scroll.scrollTop;
    const height = this.scroll.clientHeight;
    const firstRow = Math.max(0, Math.floor(top / this.rowH) - OVERSCAN_ROWS);
    const lastRow = Math.ceil((top + height) / this.rowH) + OVERSCAN_ROWS;
    const start = firstRow * this.cols;
    const end = Math.min(this.total, lastRow * this.cols);
    for (const [i, node] of this.nodes) {
      if (i < start || i >= end) {
        node.remove();
        this.nodes.delete(i);
      }
    }
    for (let i = start; i < end; i++) {
      const page = Math.floor(i / PAGE);
      const tile = this.pages.get(page)?.[i - page * PAGE];
      if (!tile) this.ensurePage(page);
      let node = this.nodes.get(i);
      if (node && (relayout || node.dataset.id !== (tile?.id ?? ""))) {
        node.remove();
        this.nodes.delete(i);
        node = undefined;
      }
      if (!node) {
        node = this.makeNode(i, tile);
        this.nodes.set(i, node);
        this.spacer.appendChild(node);
      }
    }
  }

  private makeNode(i: number, tile: Tile | undefined): HTMLElement {
    const row = Math.floor(i / this.cols);
    const col = i % this.cols;
    const node = document.createElement("div");
    node.className = "tile";
    node.style.left = `${col * (this.tileW + GAP)}px`;
    node.style.top = `${row * this.rowH}px`;
    node.style.width = `${this.tileW}px`;
    node.style.height = `${this.tileW + CAPTION}px`;
    node.dataset.index = String(i);
    if (i === this.focused) node.classList.add("focused");
    if (!tile) {
      node.classList.add("loading");
      node.dataset.id = "";
      return node;
    }
    // id: the tile's own id (an object's, in an object grid); sample: the sample it belongs to
    node.dataset.id = tile.id;
    node.dataset.sample = tile.sample_id;
    if (tile.selected) node.classList.add("selected");
    const thumb = document.createElement("div");
    thumb.className = "thumb";
    thumb.style.height = `${this.tileW}px`;
    const img = document.createElement("img");
    img.src = tile.thumb;
    img.alt = "";
    img.draggable = false;
    thumb.appendChild(img);
    if (tile.boxes.length) thumb.appendChild(boxOverlay(img, tile.boxes, false));
    node.appendChild(thumb);
    if (tile.missing) {
      // no image: say which sample it is, and its label
      const note = document.createElement("div");
      note.className = "missing-note";
      note.textContent = `${tile.sample_id.slice(-8)} · no image` +
        (tile.labels[0]?.label != null ? ` · ${tile.labels[0].label}` : "");
      note.title = `${tile.sample_id}: the image could not be read`;
      thumb.appendChild(note);
    }
    const caption = document.createElement("div");
    caption.className = "caption";
    if (tile.group) caption.appendChild(groupChip(tile.group));
    if (tile.score && Number.isFinite(tile.score.value)) {
      const span = document.createElement("span");
      span.className = "chip score";
      span.textContent = `${shortName(tile.score.field)} ${formatScore(tile.score.value)}`;
      span.title = `${tile.score.field} = ${tile.score.value} (what ranked this sample)`;
      caption.appendChild(span);
    }
    const truth = tile.labels.find((c) => /truth|^gt$|^label$/i.test(c.field)) ?? null;
    for (const chip of tile.labels) {
      const span = document.createElement("span");
      const isTruth = chip === truth;
      const differs = truth && !isTruth && chip.label !== truth.label;
      span.className = `chip label ${isTruth ? "truth" : "other"}${differs ? " differs" : ""}`;
      span.dataset.field = chip.field;
      const key = document.createElement("b");
      key.textContent = shortName(chip.field);
      span.append(key, ` ${chip.label ?? ""}`);
      span.title = `${chip.field}: ${chip.label ?? ""}` + (chip.confidence != null ? ` (confidence ${chip.confidence.toFixed(3)})` : "") +
        (differs ? ` — differs from ${truth!.field}` : "");
      caption.appendChild(span);
    }
    for (const tag of tile.tags) {
      const span = document.createElement("span");
      span.className = "chip tag";
      span.textContent = tag;
      span.title = `tag: ${tag}`;
      caption.appendChild(span);
    }
    node.appendChild(caption);
    node.addEventListener("click", (ev) => {
      this.setFocus(i, false);
      this.events.select(tile, ev.shiftKey || ev.metaKey || ev.ctrlKey);
    });
    node.addEventListener("dblclick", () => this.events.open(tile));
    return node;
  }

  /** Move the keyboard focus by `dx` tiles and `dy` rows (the first tile in sight when none has it). */
  moveFocus(dx: number, dy: number): void {
    if (!this.total) return;
    let to = this.focused < 0 ? this.firstVisibleIndex() : this.focused + dx + dy * this.cols;
    if (dy && (to < 0 || to >= this.total)) to = this.focused; // no row above the first, none below the last
    this.setFocus(Math.max(0, Math.min(this.total - 1, to)));
  }

  /** Give tile `i` the keyboard focus, scrolled into sight (`scroll`). */
  setFocus(i: number, scroll = true): void {
    this.focused = i;
    for (const [k, node] of this.nodes) node.classList.toggle("focused", k === i);
    if (scroll) {
      const top = Math.floor(i / this.cols) * this.rowH;
      if (top < this.scroll.scrollTop) this.scroll.scrollTop = top;
      else if (top + this.rowH > this.scroll.scrollTop + this.scroll.clientHeight) {
        this.scroll.scrollTop = top + this.rowH - this.scroll.clientHeight;
      }
      this.schedule();
    }
  }

  /** The focused tile, when its page is loaded. */
  focusedTile(): Tile | undefined {
    if (this.focused < 0) return undefined;
    const page = Math.floor(this.focused / PAGE);
    return this.pages.get(page)?.[this.focused - page * PAGE];
  }

  /** Focus the tile with id `id`, when its page is loaded (the modal stepped to it). */
  focusId(id: string): void {
    for (const [page, tiles] of this.pages) {
      const k = tiles.findIndex((t) => t.id === id);
      if (k >= 0) return this.setFocus(page * PAGE + k);
    }
  }

  /** Mark tiles selected or not, by tile id, in the loaded pages and the DOM (no request). */
  markSelected(selected: (tileId: string) => boolean): void {
    for (const tiles of this.pages.values()) for (const t of tiles) t.selected = selected(t.id);
    for (const node of this.nodes.values()) {
      const id = node.dataset.id;
      if (id) node.classList.toggle("selected", selected(id));
    }
  }

  /** Ids of the tiles now in the DOM (samples, or objects in an object grid), in grid order. */
  idsInDom(): string[] {
    return [...this.nodes.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([, n]) => n.dataset.id ?? "")
      .filter((id) => id);
  }

  loadedTiles(): Tile[] {
    return [...this.pages.values()].flat();
  }

  /** The tile `step` places after (or before) the one with id `id`, when its page is loaded. */
  neighbour(id: string, step: number): Tile | undefined {
    for (const [page, tiles] of this.pages) {
      const i = tiles.findIndex((t) => t.id === id);
      if (i < 0) continue;
      const j = page * PAGE + i + step;
      return this.pages.get(Math.floor(j / PAGE))?.[j - Math.floor(j / PAGE) * PAGE];
    }
    return undefined;
  }
}

/** A short key for a field in a chip: "gt" for ground_truth, "pred" for predictions, else its initials
 * (snake_case) or its first four letters. The full name is in the chip's title. */
export function shortName(field: string): string {
  const known: Record<string, string> = { ground_truth: "gt", predictions: "pred", prediction: "pred",
                                          mistakenness: "mistake", uniqueness: "unique", hardness: "hard" };
  const base = field.split(".")[0];
  if (known[base]) return known[base];
  if (base.endsWith("_novelty")) return "novel"; // a comparison run's <brain_key>_novelty
  const parts = base.split("_").filter(Boolean);
  return parts.length > 1 ? parts.map((w) => w[0]).join("") : base.slice(0, 6);
}

function formatScore(v: number): string {
  if (Number.isInteger(v)) return v.toLocaleString();
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) < 1e-3 ? v.toExponential(2) : v.toPrecision(3);
}

/** A duplicate group's chip: the kept sample, or a copy with its distance (and channel). Members of one
 * group share a colour. */
function groupChip(g: NonNullable<Tile["group"]>): HTMLElement {
  const span = document.createElement("span");
  span.className = `chip group ${g.role}`;
  let h = 0;
  for (let i = 0; i < g.kept.length; i++) h = (h * 31 + g.kept.charCodeAt(i)) | 0;
  span.style.borderColor = `hsl(${Math.abs(h) % 360}, 70%, 60%)`;
  span.dataset.kept = g.kept;
  span.dataset.role = g.role;
  if (g.role === "kept") {
    span.textContent = `kept · ${g.copies ?? 0} ${g.copies === 1 ? "copy" : "copies"}`;
    span.title = `kept sample of a duplicate group (${g.kept})`;
  } else {
    span.textContent = `copy · d ${formatScore(g.distance)}` + (g.channel ? ` · ${g.channel}` : "");
    span.title = `duplicate of ${g.kept} at distance ${g.distance}` + (g.channel ? ` (${g.channel})` : "");
  }
  return span;
}
