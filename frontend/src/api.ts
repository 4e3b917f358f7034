// Talking to the embedlens server: JSON and binary routes, the auth token, and the live-state socket.

export interface StateMessage {
  type: "hello" | "state" | "pong";
  reason: string;
  origin: string | null;
  revision: number;
  dataset: string | null;
  client_id?: string;
  patches?: boolean;
  /** The grid shows objects (a patches view, or objects lassoed in an object-level plot). */
  grid_patches?: boolean;
  view?: { stages: Stage[]; count: number };
  grid_count?: number;
  selected_count?: number;
  selected?: string[] | null;
  selected_labels_count?: number;
  /** Ids of the selected objects (small selections). */
  selected_labels?: string[] | null;
  lasso?: { brain_key: string; points: number; samples: number } | null;
  /** The grid keeps to the classes the plot's legend shows. */
  legend_filter?: boolean;
  /** The view lists its samples in an order of its own (sorted, ranked, objects), not the dataset's. */
  ordered?: boolean;
  /** The action that made the view (duplicates, unique, mistakes, hardness, similarity). */
  action?: { name: string; brain_key?: string | null } | null;
  /** This page's client id, and the page whose selection Python sees. */
  client?: string | null;
  selected_by?: string | null;
}

export type Stage = { _stage: string; kwargs: Record<string, unknown> };

export interface Chip {
  field: string;
  label: string | null;
  confidence?: number | null;
}

/** An object's box, relative to its image: [x, y, w, h] in [0, 1]. */
export interface Box {
  field: string;
  id: string | null;
  label: string | null;
  box: [number, number, number, number];
  confidence: number | null;
}

export interface Tile {
  id: string;
  sample_id: string;
  thumb: string;
  full: string;
  missing: boolean;
  tags: string[];
  labels: Chip[];
  boxes: Box[];
  selected: boolean;
  /** What ranked the tile in a sorted view: the field and its value. */
  score: { field: string; value: number } | null;
  /** Its duplicate group, in a duplicates view. */
  group: { kept: string; role: "kept" | "copy"; distance: number; copies?: number; channel?: string } | null;
}

export interface SampleDetail {
  id: string;
  fields: Record<string, unknown>;
  schema: Record<string, string>;
  boxes: Box[];
  full: string;
}

export interface NumericField {
  name: string;
  type: "int" | "float";
  min: number | null;
  max: number | null;
}

export interface SamplesPage {
  total: number;
  offset: number;
  limit: number;
  samples: Tile[];
}

export interface Summary {
  name: string;
  total: number;
  count: number;
  patches: boolean;
  fields: { name: string; type: string; count: number }[];
  tags: { tag: string; count: number }[];
  labels: Record<string, { type: string; path: string; values: { value: string; count: number }[] }>;
  numeric: NumericField[];
  stages: Stage[];
  /** The page's "show ..." actions and the brain runs each can use (empty: not available). */
  actions: Record<"duplicates" | "unique" | "mistakes" | "hardness" | "novelty", string[]>;
}

export interface RunInfo {
  key: string;
  method: string;
  num_dims: number;
  patches_field: string | null;
}

export interface RunMeta extends RunInfo {
  count: number;
  bounds: [number, number, number, number];
  color_fields: { path: string; kind: "categorical" | "numeric" }[];
}

export interface ValuesHeader {
  kind: "categorical" | "numeric";
  dtype: "<u1" | "<u2" | "<f4";
  categories?: (string | number)[];
  counts?: number[];
  missing: number;
  missing_code?: number;
  min?: number | null;
  max?: number | null;
}

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
  ) {
    super(message);
  }
}

const token = new URLSearchParams(location.search).get("token");
let clientId = "";

export function setClientId(id: string): void {
  clientId = id;
}

export function getClientId(): string {
  return clientId;
}

/** The token and client headers every request of this page carries. */
export function requestHeaders(): Record<string, string> {
  return headers();
}

function headers(extra: Record<string, string> = {}): Record<string, string> {
  const h: Record<string, string> = { ...extra };
  if (token) h["X-Embedlens-Token"] = token;
  if (clientId) h["X-Embedlens-Client"] = clientId;
  return h;
}

async function check(res: Response): Promise<Response> {
  if (!res.ok) {
    let msg = `${res.status} ${res.statusText}`;
    try {
      const body = await res.json();
      if (body && body.detail) msg = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch {
      /* not JSON */
    }
    throw new ApiError(res.status, msg);
  }
  return res;
}

export async function getJSON<T>(path: string): Promise<T> {
  const res = await check(await fetch(path, { headers: headers() }));
  return (await res.json()) as T;
}

export async function postJSON<T>(path: string, body: unknown = {}): Promise<T> {
  const res = await check(
    await fetch(path, {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
    }),
  );
  return (await res.json()) as T;
}

export async function getBinary(path: string): Promise<ArrayBuffer> {
  const res = await check(await fetch(path, { headers: headers() }));
  return res.arrayBuffer();
}

export async function postBinary<T>(path: string, data: ArrayBufferView,
                                   extra: Record<string, string> = {}): Promise<T> {
  const res = await check(
    await fetch(path, {
      method: "POST",
      headers: headers({ "Content-Type": "application/octet-stream", ...extra }),
      body: data as unknown as BodyInit,
    }),
  );
  return (await res.json()) as T;
}

export async function postForBinary(path: string, body: unknown): Promise<ArrayBuffer> {
  const res = await check(
    await fetch(path, {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
    }),
  );
  return res.arrayBuffer();
}

/** A WebSocket to /ws that reconnects, handing every state message to `onMessage`. */
export function connectLive(onMessage: (msg: StateMessage) => void, onStatus: (up: boolean) => void): void {
  let delay = 250;
  const open = () => {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const q = token ? `?token=${encodeURIComponent(token)}` : "";
    const ws = new WebSocket(`${proto}://${location.host}/ws${q}`);
    ws.onopen = () => {
      delay = 250;
      onStatus(true);
    };
    ws.onmessage = (ev) => {
      try {
        onMessage(JSON.parse(ev.data as string) as StateMessage);
      } catch (e) {
        console.error("bad message", e);
      }
    };
    ws.onclose = () => {
      onStatus(false);
      setTimeout(open, delay);
      delay = Math.min(delay * 2, 5000);
    };
  };
  open();
}
