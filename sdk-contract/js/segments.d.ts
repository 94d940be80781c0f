// Type declarations of the segments web SDK (segments.js).

/** A change object: how an attribute changes instead of a plain value being written. */
export type Change =
  | { set: AttributeValue }
  | { set_once: AttributeValue }
  | { unset: true }
  | { add: number }
  | { subtract: number }
  | { append: string | number | boolean | Array<string | number | boolean> }
  | { prepend: string | number | boolean | Array<string | number | boolean> }
  | { remove: string | number | boolean | Array<string | number | boolean> };

/** A plain attribute value; `null` removes the attribute. */
export type AttributeValue = string | number | boolean | null | AttributeValue[] | { [key: string]: AttributeValue };

/**
 * Attributes of a user or a company: values, change objects, or nested objects (stored as dotted
 * names: `{address: {city: "Paris"}}` is the attribute `address.city`).
 */
export interface Attributes {
  [name: string]: AttributeValue | Change | Attributes;
}

/** A segment as the query service names it. */
export interface SegmentRef {
  id: string;
  key: string;
  name: string;
}

export interface InitOptions {
  /** The environment's write key (public). */
  writeKey: string;
  /** Base URL of the ingest service, e.g. `https://ingest.example.com`. */
  host: string;
  /** Base URL of the query service; defaults to `host`. */
  queryHost?: string;
  /** Use this anonymous id instead of the stored (or a generated) one. */
  anonymousId?: string;
  /** Milliseconds between a call and the send of its batch (default 50). */
  flushInterval?: number;
  /** Messages per request; a full batch is sent at once (default 100). */
  maxBatch?: number;
  /** First retry delay in milliseconds, doubled per failure, with jitter (default 1000). */
  retryBase?: number;
  /** Longest retry delay in milliseconds (default 60000). */
  retryMax?: number;
  /** How long `segments()` answers are cached, in milliseconds (default 5000). */
  cacheTtl?: number;
  /** How long the first `segments()` after the user's own change waits for it to commit (default 3000). */
  ackWait?: number;
  /** Size cap of the queue kept in localStorage, in characters (default 524288); the oldest messages go first. */
  maxQueueBytes?: number;
  /** The `fetch` to use (default: the global one). */
  fetch?: typeof fetch;
  /** Where the queue and the identity are kept (default: `localStorage` when usable). */
  storage?: Pick<Storage, 'getItem' | 'setItem' | 'removeItem' | 'key' | 'length'>;
}

/** Options every sending call accepts. */
export interface MessageOptions {
  /** When it happened (default: now); a late message never overwrites a newer attribute value. */
  timestamp?: Date | string | number;
  /** A stable id of your own (default: a random UUID); ingest applies each id once. */
  messageId?: string;
  /** Extra `context` fields sent with the message. */
  context?: Record<string, unknown>;
}

export interface IdentifyOptions extends MessageOptions {
  /** HS256 JWT whose `sub` is the userId, required when identity verification is on. */
  identityToken?: string;
  /** Manual segment operations, in order: `"key"` adds, `"~key"` removes, `"~"` removes all. */
  segments?: string[];
}

export interface UpdateOptions extends MessageOptions {
  segments?: string[];
}

export interface GroupOptions extends MessageOptions {
  /** The user's attributes within this company. */
  membership?: Attributes;
}

/** Every promise of a sending call resolves once ingest has acknowledged (or refused) the message. */
export interface Client {
  /** Configure the client; queued messages of earlier pages are sent again. Call once. */
  init(options: InitOptions): void;
  /** The user is `userId`; their anonymous activity on this browser merges into them. */
  identify(userId: string | number, attributes?: Attributes, options?: IdentifyOptions): Promise<void>;
  /** Attributes of a visitor not yet known, kept under a stable anonymous id (localStorage). */
  identifyAnonymous(attributes?: Attributes, options?: MessageOptions): Promise<void>;
  /** Change attributes of the current (identified or anonymous) user. */
  updateUser(attributes: Attributes, options?: UpdateOptions): Promise<void>;
  /** The current user belongs to company `companyId`; throws before `identify`. */
  group(companyId: string | number, attributes?: Attributes, options?: GroupOptions): Promise<void>;
  /** Record an event. */
  track(event: string, properties?: Record<string, unknown>, options?: MessageOptions): Promise<void>;
  /** Link `previousId` (default: the current user or anonymous id) to `userId`, who becomes the current user. */
  alias(userId: string | number, previousId?: string, options?: MessageOptions): Promise<void>;
  /** Forget the user (logout): a new anonymous id, no userId, no cached segments. */
  reset(): void;
  /** Whether the current user is in the segment with this key (or id). */
  isInSegment(key: string): Promise<boolean>;
  /** The segments of the current user, cached briefly (invalidated by the user's own changes). */
  segments(): Promise<SegmentRef[]>;
  /** Resolves when every queued message has been acknowledged. */
  flush(): Promise<void>;
  /** The current ids. */
  user(): { userId: string | null; anonymousId: string | null };
}

/** Change-object helpers: `identify(id, { logins: change.add(1) })`. */
export declare const change: {
  set(value: AttributeValue): Change;
  setOnce(value: AttributeValue): Change;
  unset(): Change;
  add(n: number): Change;
  subtract(n: number): Change;
  append(value: string | string[]): Change;
  prepend(value: string | string[]): Change;
  remove(value: string | string[]): Change;
};

/** Method names the loader snippet queues before the SDK has loaded. */
export declare const METHODS: readonly string[];

/** A client with its own queue and identity (the named exports are the default client). */
export declare function createClient(): Client;

export declare function init(options: InitOptions): void;
export declare function identify(userId: string | number, attributes?: Attributes, options?: IdentifyOptions): Promise<void>;
export declare function identifyAnonymous(attributes?: Attributes, options?: MessageOptions): Promise<void>;
export declare function updateUser(attributes: Attributes, options?: UpdateOptions): Promise<void>;
export declare function group(companyId: string | number, attributes?: Attributes, options?: GroupOptions): Promise<void>;
export declare function track(event: string, properties?: Record<string, unknown>, options?: MessageOptions): Promise<void>;
export declare function alias(userId: string | number, previousId?: string, options?: MessageOptions): Promise<void>;
export declare function reset(): void;
export declare function isInSegment(key: string): Promise<boolean>;
export declare function segments(): Promise<SegmentRef[]>;
export declare function flush(): Promise<void>;
export declare function user(): { userId: string | null; anonymousId: string | null };

declare const client: Client & { change: typeof change };
export default client;

declare global {
  /** Set by the loader snippet (a queue) and then by the SDK (the client). */
  // eslint-disable-next-line no-var
  var segments: (Client & { change: typeof change }) | undefined;
}
