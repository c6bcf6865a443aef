// Types of Sluice's JavaScript client (sluice.js).

/** A problem+json answer of the API. */
export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  /** A stable code: `topic_not_found`, `rate_limited`, ... */
  code?: string;
  [field: string]: unknown;
}

/** An answer of the API that is not a success, typed by its problem `code`. */
export class SluiceError extends Error {
  readonly status: number;
  readonly code: string;
  readonly problem: Problem | null;
}

export interface SluiceOptions {
  /** The gateway, e.g. `https://sluice.example.com` (default: this page's origin). */
  url?: string;
  /** A bearer token. */
  token?: string;
  /** Asked for a token before the current one expires and after a 401. */
  getToken?: () => string | Promise<string>;
  /** Retries of a failed request (429, 502-504, network errors); default 6. */
  retries?: number;
  fetch?: typeof fetch;
  WebSocket?: typeof WebSocket | null;
  EventSource?: typeof EventSource | null;
}

/** A record to produce. */
export interface NewRecord {
  key?: string;
  value?: unknown;
  /** A binary value, base64-encoded (instead of `value`). */
  value_base64?: string;
  headers?: { [name: string]: string };
  partition?: number;
  timestamp?: number;
}

/** A record read. */
export interface FetchedRecord {
  partition: number;
  offset: number;
  timestamp: number;
  key?: string;
  headers?: { [name: string]: string };
  value?: unknown;
  value_base64?: string;
}

export interface RecordOffset {
  partition: number;
  offset: number;
}

export interface FetchResponse {
  records: FetchedRecord[];
  next_offset: number;
  high_watermark: number;
}

/** One poll of a group consumer. */
export interface Batch {
  records: FetchedRecord[];
  generation: number;
  assignment: number[];
  /** Commits the offsets after these records (done anyway when the loop body returns). */
  commit(): Promise<void>;
}

export interface ConsumeOptions {
  group: string;
  topic: string;
  /** The member's id (default: one is made up). */
  consumer?: string;
  limit?: number;
  /** How long a poll waits for records; default 10000. */
  waitMs?: number;
  signal?: AbortSignal;
}

export type From = 'earliest' | 'latest' | { offset: { [partition: string]: number } } | { timestamp: number };

export type SubscribeSpec =
  | { topic: string; from?: From; partitions?: number[] }
  | { topic: string; group: string; consumer?: string; reset?: 'earliest' | 'latest' }
  | { table: string; keyPrefix?: string };

export interface SubscribeHandlers {
  /** Records of one partition, in offset order; a group's are committed once this returns. */
  onRecords?(records: FetchedRecord[], where: { topic: string; partition: number }): void | Promise<void>;
  /** A table row changed (`row` null: deleted). */
  onRow?(key: string, row: unknown): void | Promise<void>;
  onSubscribed?(frame: { id: string; log_epoch?: string; positions?: { [partition: string]: number } }): void;
  onAssigned?(assignment: number[], generation: number): void;
  /** `live` once (re)subscribed; `reconnecting` while the connection is down. */
  onState?(state: 'live' | 'reconnecting'): void;
  /** The server's data was replaced: the subscription stopped rather than read again. */
  onEpochChange?(before: string, now: string): void;
  onError?(error: unknown): void;
}

export interface Subscription {
  /** Per partition, the offset after the last record delivered. */
  readonly positions: Map<number, number>;
  close(): void;
}

export interface Tables {
  /** A row, or null; `after` makes it reflect a produce's records. */
  get(table: string, key: string, options?: { after?: RecordOffset[] | string; waitMs?: number; signal?: AbortSignal }): Promise<unknown | null>;
  /** The row each time it changes (null while there is none). */
  watch(table: string, key: string, options?: { waitMs?: number; signal?: AbortSignal }): AsyncGenerator<unknown | null>;
  /** Rows whose keys start with `prefix`, in key order. */
  browse(table: string, options?: { prefix?: string; limit?: number; signal?: AbortSignal }): AsyncGenerator<{ key: string; row: unknown }>;
}

export class Sluice {
  constructor(options?: SluiceOptions);
  readonly url: string;
  readonly tables: Tables;
  produce(topic: string, records: NewRecord | NewRecord[], options?: { idempotencyKey?: string; signal?: AbortSignal }): Promise<RecordOffset[]>;
  produceNdjson(topic: string, records: (NewRecord | string)[], options?: { idempotencyKey?: string; signal?: AbortSignal }): Promise<RecordOffset[]>;
  fetch(topic: string, partition: number, options?: { offset?: number; maxRecords?: number; waitMs?: number; signal?: AbortSignal }): Promise<FetchResponse>;
  consume(options: ConsumeOptions): AsyncGenerator<Batch>;
  subscribe(spec: SubscribeSpec, handlers?: SubscribeHandlers): Subscription;
  request<T = unknown>(method: string, path: string, options?: { body?: unknown; headers?: { [name: string]: string }; retry?: boolean; signal?: AbortSignal }): Promise<T>;
}
