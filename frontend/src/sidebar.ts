// The left sidebar: dataset picker, tag and label filters, numeric sort. It turns its choices into view
// stages in embedlens's stage JSON (Stage.to_dict) and hands them to `apply`.

import type { Stage, Summary } from "./api";

export interface SidebarEvents {
  apply(stages: Stage[]): void;
  dataset(name: string): void;
  reset(): void;
}

export class Sidebar {
  tags = new Set<string>();
  labels = new Map<string, Set<string>>();
  sortField = "";
  sortReverse = false;
  private summary: Summary | null = null;

  constructor(
    private readonly els: {
      dataset: HTMLSelectElement;
      viewInfo: HTMLElement;
      reset: HTMLButtonElement;
      tags: HTMLElement;
      labels: HTMLElement;
      sortField: HTMLSelectElement;
      sortReverse: HTMLInputElement;
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
  }

  clearFilters(): void {
    this.tags.clear();
    this.labels.clear();
    this.sortField = "";
    this.sortReverse = false;
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
    if (this.sortField) out.push({ _stage: "SortBy", kwargs: { field_or_expr: this.sortField, reverse: this.sortReverse } });
    return out;
  }

  private emit(): void {
    this.events.apply(this.stages());
  }

  setDatasets(names: string[], current: string | null): void {
    const sel = this.els.dataset;
    sel.replaceChildren(
      ...names.map((n) => {
        const o = document.createElement("option");
        o.value = n;
        o.textContent = n;
        return o;
      }),
    );
    if (current) sel.value = current;
  }

  render(summary: Summary, baseStages: number): void {
    this.summary = summary;
    const extra = this.stages().length;
    this.els.viewInfo.textContent =
      `${summary.count.toLocaleString()} of ${summary.total.toLocaleString()} samples` +
      (baseStages ? ` · ${baseStages} stage${baseStages > 1 ? "s" : ""} from Python` : "") +
      (extra ? ` · ${extra} filter${extra > 1 ? "s" : ""}` : "");
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
    const sort = this.els.sortField;
    sort.replaceChildren(new Option("(dataset order)", ""), ...summary.numeric_fields.map((f) => new Option(f, f)));
    sort.value = this.sortField;
    this.els.sortReverse.checked = this.sortReverse;
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
