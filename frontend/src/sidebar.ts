// The left sidebar: dataset picker, the view's stages (each removable), tag, label and numeric-range
// filters, sort and limit. It turns its choices into view stages in embedlens's stage JSON
// (Stage.to_dict) and hands them to `apply`.

import type { NumericField, Stage, Summary } from "./api";

export interface SidebarEvents {
  apply(stages: Stage[]): void;
  dataset(name: string): void;
  reset(): void;
  /** Remove stage `index` of the view's stages (those from Python first, then the sidebar's). */
  removeStage(index: number): void;
}

type Range = [number | null, number | null];

export class Sidebar {
  tags = new Set<string>();
  labels = new Map<string, Set<string>>();
  ranges = new Map<string, Range>();
  sortField = "";
  sortReverse = false;
  limit: number | null = null;
  private summary: Summary | null = null;

  constructor(
    private readonly els: {
      dataset: HTMLSelectElement;
      viewInfo: HTMLElement;
      stages: HTMLElement;
      reset: HTMLButtonElement;
      tags: HTMLElement;
      labels: HTMLElement;
      numeric: HTMLElement;
      fields: HTMLElement;
      sortField: HTMLSelectElement;
      sortReverse: HTMLInputElement;
      limit: HTMLInputElement;
    },
    private readonly events: SidebarEvents,
  ) {
    els.dataset.addEventListener("change", () => events.dataset(els.dataset.value));
    els.reset.addEventListener("click", () => events.reset());
    els.sortField.addEventListener("change", () => {
      this.sortField = els.sortField.value;
      this.emit();
    });
    els.sortReverse.addEventListener("change", () => {
      this.sortReverse = els.sortReverse.checked;
      if (this.sortField) this.emit();
    });
    els.limit.addEventListener("change", () => {
      const n = Math.floor(Number(els.limit.value));
      this.limit = els.limit.value.trim() && n > 0 ? n : null;
      this.emit();
    });
  }

  clearFilters(): void {
    this.tags.clear();
    this.labels.clear();
    this.ranges.clear();
    this.sortField = "";
    this.sortReverse = false;
    this.limit = null;
    this.els.limit.value = "";
  }

  /** The sidebar's own stages, to append to the base view. */
  stages(): Stage[] {
    const out: Stage[] = [];
    if (this.tags.size) out.push({ _stage: "MatchTags", kwargs: { tags: [...this.tags], bool: true, all: false } });
    for (const [field, values] of this.labels) {
      if (!values.size) continue;
      const info = this.summary?.labels[field];
      const inList = { $op: "is_in", args: [{ $field: "label" }, { $lit: [...values] }] };
      if (info && info.type === "Detections") {
        out.push({ _stage: "FilterLabels", kwargs: { field, filter: inList, only_matches: true } });
      } else {
        out.push({
          _stage: "Match",
          kwargs: { filter: { $op: "is_in", args: [{ $field: `${field}.label` }, { $lit: [...values] }] } },
        });
      }
    }
    for (const [field, [lo, hi]] of this.ranges) {
      const parts = [];
      if (lo !== null) parts.push({ $op: ">=", args: [{ $field: field }, lo] });
      if (hi !== null) parts.push({ $op: "<=", args: [{ $field: field }, hi] });
      if (parts.length) {
        out.push({ _stage: "Match", kwargs: { filter: parts.length === 2 ? { $op: "&", args: parts } : parts[0] } });
      }
    }
    if (this.sortField) out.push({ _stage: "SortBy", kwargs: { field_or_expr: this.sortField, reverse: this.sortReverse } });
    if (this.limit) out.push({ _stage: "Limit", kwargs: { limit: this.limit } });
    return out;
  }

  private emit(): void {
    this.events.apply(this.stages());
  }

  setDatasets(names: string[], current: string | null): void {
    this.els.dataset.replaceChildren(...names.map((n) => new Option(n, n)));
    if (current) this.els.dataset.value = current;
  }

  render(summary: Summary, baseStages: Stage[], action: { name: string; brain_key?: string | null } | null = null): void {
    this.summary = summary;
    const all = [...baseStages, ...this.stages()];
    this.els.viewInfo.textContent = `${summary.count.toLocaleString()} of ${summary.total.toLocaleString()} samples` +
      (summary.patches ? " (objects)" : "");
    this.els.stages.replaceChildren(
      ...all.map((st, i) => {
        const item = document.createElement("div");
        item.className = "stage";
        item.dataset.stage = st._stage;
        const text = document.createElement("span");
        text.textContent = describeStage(st, i < baseStages.length ? action : null);
        text.title = JSON.stringify(st.kwargs);
        const x = document.createElement("button");
        x.type = "button";
        x.textContent = "×";
        x.title = "remove this stage";
        x.setAttribute("aria-label", `remove ${st._stage}`);
        x.addEventListener("click", () => this.events.removeStage(i));
        item.append(text, x);
        return item;
      }),
    );
    this.els.fields.replaceChildren(
      ...summary.fields.map((f) => {
        const row = document.createElement("div");
        row.className = "field-row";
        row.dataset.field = f.name;
        const name = document.createElement("span");
        name.textContent = f.name;
        name.title = `${f.name} (${f.type})`;
        const type = document.createElement("span");
        type.className = "muted";
        type.textContent = f.type;
        const n = document.createElement("span");
        n.className = "count";
        n.textContent = f.count.toLocaleString();
        n.title = `${f.count.toLocaleString()} of ${summary.count.toLocaleString()} have a value`;
        row.append(name, type, n);
        return row;
      }),
    );
    this.els.tags.replaceChildren(
      ...summary.tags.map((t) => this.checkbox(t.tag, t.count, this.tags.has(t.tag), (on) => {
        if (on) this.tags.add(t.tag);
        else this.tags.delete(t.tag);
        this.emit();
      }, "tag")),
    );
    if (!summary.tags.length) this.els.tags.textContent = "no tags";
    const sections: HTMLElement[] = [];
    for (const [field, info] of Object.entries(summary.labels)) {
      const sec = document.createElement("div");
      sec.className = "label-field";
      const h = document.createElement("h3");
      h.textContent = `${field} (${info.type})`;
      const list = document.createElement("div");
      list.className = "checklist";
      const chosen = this.labels.get(field) ?? new Set<string>();
      for (const v of info.values) {
        list.appendChild(
          this.checkbox(String(v.value), v.count, chosen.has(String(v.value)), (on) => {
            const set = this.labels.get(field) ?? new Set<string>();
            if (on) set.add(String(v.value));
            else set.delete(String(v.value));
            this.labels.set(field, set);
            this.emit();
          }, `label-${field}`),
        );
      }
      sec.append(h, list);
      sections.push(sec);
    }
    this.els.labels.replaceChildren(...sections);
    this.els.numeric.replaceChildren(...summary.numeric.map((f) => this.rangeRow(f)));
    const sort = this.els.sortField;
    sort.replaceChildren(new Option("(view order)", ""), ...summary.numeric.map((f) => new Option(f.name, f.name)));
    sort.value = this.sortField;
    this.els.sortReverse.checked = this.sortReverse;
  }

  /** min <= field <= max inputs; the placeholders show the field's range in the view. */
  private rangeRow(f: NumericField): HTMLElement {
    const row = document.createElement("div");
    row.className = "range";
    row.dataset.field = f.name;
    const name = document.createElement("span");
    name.textContent = f.name;
    name.title = `${f.type}, ${fmt(f.min)} … ${fmt(f.max)} in this view`;
    const [lo, hi] = this.ranges.get(f.name) ?? [null, null];
    const input = (value: number | null, bound: number | null, which: 0 | 1) => {
      const el = document.createElement("input");
      el.type = "number";
      el.step = "any";
      el.placeholder = fmt(bound);
      el.setAttribute("aria-label", `${f.name} ${which ? "max" : "min"}`);
      el.dataset.bound = which ? "max" : "min";
      if (value !== null) el.value = String(value);
      el.addEventListener("change", () => {
        const r: Range = [...(this.ranges.get(f.name) ?? [null, null])] as Range;
        r[which] = el.value.trim() === "" || !Number.isFinite(Number(el.value)) ? null : Number(el.value);
        if (r[0] === null && r[1] === null) this.ranges.delete(f.name);
        else this.ranges.set(f.name, r);
        this.emit();
      });
      return el;
    };
    row.append(name, input(lo, f.min, 0), input(hi, f.max, 1));
    return row;
  }

  private checkbox(name: string, count: number, checked: boolean, on: (v: boolean) => void, kind: string): HTMLElement {
    const label = document.createElement("label");
    label.className = "check";
    label.dataset.kind = kind;
    label.dataset.value = name;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = checked;
    box.addEventListener("change", () => on(box.checked));
    const text = document.createElement("span");
    text.textContent = name;
    const n = document.createElement("span");
    n.className = "count";
    n.textContent = count.toLocaleString();
    label.append(box, text, n);
    return label;
  }
}

function fmt(x: number | null): string {
  if (x === null || x === undefined) return "";
  return Number.isInteger(x) ? String(x) : x.toPrecision(3);
}

/** A stage in a few words: "uniqueness ≥ 0.8", "sort by mistakenness ↓", "first 100". */
export function describeStage(st: Stage, action: { name: string; brain_key?: string | null } | null = null): string {
  // lists come as {"$lit": [...]} in the stage JSON
  const k = Object.fromEntries(Object.entries(st.kwargs).map(([key, v]) => [key, lit(v)])) as Record<string, any>;
  const n = (v: unknown) => (Array.isArray(v) ? v.length : 0).toLocaleString();
  const from = action?.brain_key ? ` (${action.brain_key})` : "";
  if (st._stage === "Select" && action?.name === "duplicates") return `duplicate groups${from}: ${n(k.sample_ids)} samples`;
  if (st._stage === "Select" && action?.name === "unique") return `most unique${from}: ${n(k.sample_ids)} samples`;
  if (st._stage === "Select" && action?.name === "novelty") return `most novel${from}: ${n(k.sample_ids)} samples`;
  switch (st._stage) {
    case "Match":
    case "FilterLabels":
      return (st._stage === "FilterLabels" ? `${k.field}: ` : "") + describeExpr(k.filter);
    case "MatchTags":
      return `${k.bool === false ? "not tagged" : "tagged"} ${([] as string[]).concat(k.tags).join(k.all ? " & " : " | ")}`;
    case "Exists":
      return `${k.field} ${k.bool === false ? "missing" : "exists"}`;
    case "SortBy":
      return `sort by ${typeof k.field_or_expr === "string" ? k.field_or_expr : describeExpr(k.field_or_expr)} ${k.reverse ? "↓" : "↑"}`;
    case "Limit":
      return `first ${k.limit}`;
    case "Skip":
      return `skip ${k.skip}`;
    case "Select":
      return `${n(k.sample_ids)} chosen samples`;
    case "Exclude":
      return `without ${n(k.sample_ids)} samples`;
    case "SortBySimilarity":
      return `most similar${k.k ? ` ${k.k}` : ""}${k.brain_key ? ` (${k.brain_key})` : ""}`;
    case "ToPatches":
      return `objects of ${k.field}`;
    case "Take":
      return `${k.size} at random`;
    case "Shuffle":
      return "shuffled";
    default:
      return st._stage;
  }
}

function lit(v: unknown): unknown {
  return v && typeof v === "object" && !Array.isArray(v) && "$lit" in (v as object) ? (v as { $lit: unknown }).$lit : v;
}

const OPS: Record<string, string> = { ">=": "≥", "<=": "≤", ">": ">", "<": "<", "==": "=", "!=": "≠", "&": "and", "|": "or" };

function describeExpr(e: any): string {
  if (e === null || typeof e !== "object") return JSON.stringify(e);
  if ("$field" in e) return e.$field;
  if ("$lit" in e) return Array.isArray(e.$lit) ? `[${e.$lit.join(", ")}]` : JSON.stringify(e.$lit);
  const args: any[] = e.args ?? [];
  if (e.$op === "is_in") return `${describeExpr(args[0])} in ${describeExpr(args[1])}`;
  if (e.$op in OPS && args.length === 2) return `${describeExpr(args[0])} ${OPS[e.$op]} ${describeExpr(args[1])}`;
  return `${e.$op}(${args.map(describeExpr).join(", ")})`;
}
