// Boxes drawn over an image as an SVG whose viewBox is the image's own pixel size: with
// preserveAspectRatio "meet" it scales exactly as the <img> does under object-fit: contain.

import type { Box } from "./api";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#ffd84d", "#4ec9b0", "#f28e2b", "#e15759", "#76b7b2", "#b07aa1", "#59a14f", "#ff9da7", "#9cdcfe"];

/** One colour per label, the same everywhere on the page. */
export function labelColor(label: string | null): string {
  const s = label ?? "";
  let h = 0;
  for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) | 0;
  return COLORS[Math.abs(h) % COLORS.length];
}

/** An SVG over `img` (same box) with `boxes`; `captions` adds each box's label and confidence. */
export function boxOverlay(img: HTMLImageElement, boxes: Box[], captions: boolean): SVGSVGElement {
  const svg = document.createElementNS(SVG, "svg");
  svg.classList.add("boxes");
  svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
  const draw = () => {
    const w = img.naturalWidth || 1;
    const h = img.naturalHeight || 1;
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    const stroke = Math.max(1, Math.min(w, h) / 150);
    svg.replaceChildren();
    for (const b of boxes) {
      const color = labelColor(b.label);
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("x", String(b.box[0] * w));
      rect.setAttribute("y", String(b.box[1] * h));
      rect.setAttribute("width", String(b.box[2] * w));
      rect.setAttribute("height", String(b.box[3] * h));
      rect.setAttribute("stroke", color);
      rect.setAttribute("stroke-width", String(stroke));
      rect.setAttribute("vector-effect", "non-scaling-stroke");
      rect.dataset.label = b.label ?? "";
      if (b.id) rect.dataset.id = b.id;
      svg.appendChild(rect);
      if (captions) {
        const text = document.createElementNS(SVG, "text");
        text.setAttribute("x", String(b.box[0] * w + stroke));
        text.setAttribute("y", String(Math.max(b.box[1] * h - stroke * 2, stroke * 10)));
        text.setAttribute("fill", color);
        text.setAttribute("font-size", String(Math.max(10, Math.min(w, h) / 30)));
        text.textContent = (b.label ?? "") + (b.confidence != null ? ` ${b.confidence.toFixed(2)}` : "");
        svg.appendChild(text);
      }
    }
  };
  if (img.complete && img.naturalWidth) draw();
  else img.addEventListener("load", draw, { once: true });
  return svg;
}
