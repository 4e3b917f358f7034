// The sample modal: the full image with every box (label and confidence), and every field as a table.
// Arrow keys step through the grid's tiles.

import { getJSON, type Box, type SampleDetail, type Tile } from "./api";
import { boxOverlay, labelColor } from "./boxes";

export interface ModalEvents {
  /** The tile `step` places from `tile` in the grid, if loaded. */
  neighbour(tile: Tile, step: number): Tile | undefined;
  error(e: unknown): void;
  /** Tag the sample of `tile`. */
  tag(tile: Tile, tag: string): Promise<void>;
  /** Select or unselect `tile`. */
  toggle(tile: Tile): Promise<void>;
  isSelected(tile: Tile): boolean;
}

export class Modal {
  tile: Tile | null = null;
  detail: SampleDetail | null = null;

  constructor(
    private readonly root: HTMLElement,
    private readonly els: { title: HTMLElement; image: HTMLElement; fields: HTMLElement; close: HTMLElement;
                            prev: HTMLElement; next: HTMLElement; tag: HTMLInputElement; tagButton: HTMLElement;
                            select: HTMLElement; selected: HTMLElement },
    private readonly events: ModalEvents,
  ) {
    els.close.addEventListener("click", () => this.hide());
    els.prev.addEventListener("click", () => this.step(-1));
    els.next.addEventListener("click", () => this.step(1));
    els.tagButton.addEventListener("click", () => void this.tagIt());
    els.select.addEventListener("click", () => void this.toggle());
    root.addEventListener("click", (ev) => {
      if (ev.target === root) this.hide();
    });
    document.addEventListener("keydown", (ev) => {
      if (root.hidden) return;
      if (ev.target === els.tag) {
        if (ev.key === "Enter") {
          els.tag.blur(); // the modal's keys work again
          void this.tagIt();
        }
        else if (ev.key === "Escape") els.tag.blur();
        return;
      }
      // a key the modal uses is not the page's too (Esc here closes the modal, not the selection)
      if (["Escape", "ArrowRight", "ArrowLeft", "t", "f"].includes(ev.key)) ev.preventDefault();
      if (ev.key === "Escape") this.hide();
      else if (ev.key === "ArrowRight") this.step(1);
      else if (ev.key === "ArrowLeft") this.step(-1);
      else if (ev.key === "t") els.tag.focus();
      else if (ev.key === "f") void this.toggle();
    });
  }

  private async tagIt(): Promise<void> {
    const tag = this.els.tag.value.trim();
    if (!this.tile || !tag) return;
    await this.events.tag(this.tile, tag);
    this.els.tag.value = "";
    if (this.tile) await this.show(this.tile);
  }

  private async toggle(): Promise<void> {
    if (!this.tile) return;
    await this.events.toggle(this.tile);
    this.showSelected();
  }

  private showSelected(): void {
    const on = this.tile ? this.events.isSelected(this.tile) : false;
    this.els.selected.textContent = on ? "selected" : "";
    this.els.select.textContent = on ? "Unselect" : "Select";
  }

  get open(): boolean {
    return !this.root.hidden;
  }

  hide(): void {
    this.root.hidden = true;
  }

  private step(k: number): void {
    const next = this.tile && this.events.neighbour(this.tile, k);
    if (next) void this.show(next);
  }

  async show(tile: Tile): Promise<void> {
    this.tile = tile;
    let d: SampleDetail;
    try {
      d = await getJSON<SampleDetail>(`/api/sample/${tile.sample_id}`);
    } catch (e) {
      this.events.error(e);
      return;
    }
    if (this.tile !== tile) return;
    this.detail = d;
    // In an object grid the tile is one object: draw that box only, and say which.
    const boxes = tile.id !== tile.sample_id ? d.boxes.filter((b) => b.id === tile.id) : d.boxes;
    this.els.title.textContent = `${d.id}` + (tile.id !== tile.sample_id ? ` · object ${tile.id}` : "");
    const img = document.createElement("img");
    img.src = d.full;
    img.alt = "";
    this.els.image.replaceChildren(img, boxOverlay(img, boxes, true));
    this.els.fields.replaceChildren(this.table(d, boxes));
    this.root.hidden = false;
    this.showSelected();
  }

  private table(d: SampleDetail, boxes: Box[]): HTMLTableElement {
    const table = document.createElement("table");
    const row = (name: string, value: Node | string, title = name) => {
      const tr = table.insertRow();
      tr.insertCell().textContent = title;
      const cell = tr.insertCell();
      if (typeof value === "string") cell.textContent = value;
      else cell.appendChild(value);
      tr.dataset.field = name;
    };
    if (!("id" in d.schema)) row("id", d.id);
    for (const [name, type] of Object.entries(d.schema)) {
      const v = d.fields[name];
      if (type === "Detections" || type === "Detection") {
        const list = document.createElement("div");
        const own = boxes.filter((b) => b.field === name);
        for (const b of own) {
          const item = document.createElement("div");
          item.className = "box-row";
          const sw = document.createElement("span");
          sw.className = "swatch";
          sw.style.background = labelColor(b.label);
          const text = document.createElement("span");
          text.textContent = `${b.label ?? "(no label)"}` + (b.confidence != null ? ` · ${b.confidence.toFixed(3)}` : "") +
            ` · [${b.box.map((x) => x.toFixed(3)).join(", ")}]`;
          item.append(sw, text);
          list.appendChild(item);
        }
        if (!own.length) list.textContent = "no objects";
        const all = d.boxes.filter((b) => b.field === name).length;
        row(name, list, own.length === all ? `${name} (${all})` : `${name} (${own.length} of ${all})`);
      } else {
        row(name, formatValue(v));
      }
    }
    return table;
  }
}

function formatValue(v: unknown): string {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(4);
  if (Array.isArray(v)) return v.map((x) => formatValue(x)).join(", ") || "[]";
  if (typeof v === "object") {
    const o = v as Record<string, unknown>;
    if (o._cls === "Classification") {
      return `${o.label}` + (typeof o.confidence === "number" ? ` · ${o.confidence.toFixed(3)}` : "");
    }
    if (o._cls === "array") return `array ${JSON.stringify(o.shape)} ${o.dtype}`;
    return JSON.stringify(o);
  }
  return String(v);
}
