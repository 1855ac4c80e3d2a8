/**
 * netrig's error classes: one per condition a caller may handle or a user may meet, each
 * with a stable `code` and an optional `cause`. Messages say what to do, not only what
 * went wrong.
 */

/** Base class: every netrig error has a stable machine-readable code. */
export class NetrigError extends Error {
  /** Stable identifier of the condition, e.g. `ERR_BPF_LOAD`. */
  readonly code: string;
  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A configuration value is missing, malformed or out of range. */
export class ConfigError extends NetrigError {
  /** The configuration key at fault, as the user spells it. */
  readonly key: string;
  constructor(key: string, message: string, options?: ErrorOptions) {
    super('ERR_CONFIG', `${key}: ${message}`, options);
    this.key = key;
  }
}

/** The process lacks the privileges eBPF needs (root, or CAP_BPF and CAP_PERFMON: edge/privileges.ts). */
export class PrivilegeError extends NetrigError {
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_PRIVILEGE', message, options);
  }
}

/** A system prerequisite (binary, filesystem, kernel feature) is absent. */
export class PrerequisiteError extends NetrigError {
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_PREREQUISITE', message, options);
  }
}

/** libbpf failed to open, load or attach the BPF object; `log` holds libbpf's own lines. */
export class BpfError extends NetrigError {
  /** The negative errno libbpf returned, when it returned one. */
  readonly errno: number;
  constructor(message: string, errno: number, options?: ErrorOptions) {
    super('ERR_BPF', message, options);
    this.errno = errno;
  }
}

/** A TCP port the user asked for is taken by another process. */
export class PortInUseError extends NetrigError {
  readonly port: number;
  constructor(port: number, what: string, options?: ErrorOptions) {
    super('ERR_PORT_IN_USE', `port ${port} (${what}) is in use by another process: stop it or choose another port`, options);
    this.port = port;
  }
}

/** The data directory is held by another netrig process. */
export class DataDirLockedError extends NetrigError {
  /** The holder's pid, null when it had not written it yet. */
  readonly pid: number | null;
  constructor(dir: string, pid: number | null, options?: ErrorOptions) {
    super('ERR_DATA_DIR_LOCKED', `data dir ${dir} is held by another netrig process (${pid === null ? 'starting now' : `pid ${pid}`}): stop it, or use its endpoint, or choose another --data-dir`, options);
    this.pid = pid;
  }
}

/**
 * The data directory belongs to another user or others may write to it: what is in it
 * decides where netrig writes and which endpoint its commands trust.
 */
export class DataDirPermissionError extends NetrigError {
  readonly dir: string;
  /** `problem`: what is wrong, e.g. `is owned by uid 65534`; `fix`: the command that fixes it. */
  constructor(dir: string, problem: string, fix: string, options?: ErrorOptions) {
    super('ERR_DATA_DIR_PERMISSION', `data dir ${dir} ${problem}: run \`${fix}\` if it is yours, or choose another --data-dir`, options);
    this.dir = dir;
  }
}

/** A file netrig writes in its data dir is a symlink, or not a plain file of this user's. */
export class DataDirFileError extends NetrigError {
  readonly path: string;
  constructor(path: string, problem: string, options?: ErrorOptions) {
    super('ERR_DATA_DIR_FILE', `${path} ${problem}, and netrig writes only its own plain files there: remove it (\`rm ${path}\`) and start again`, options);
    this.path = path;
  }
}

/**
 * A command that reads rows found none to read: no running `netrig up` and no store where it
 * looked. Reading never creates a store.
 */
export class StoreNotFoundError extends NetrigError {
  /** The data dir looked in. */
  readonly dataDir: string;
  /** `looked`: where it looked, as the user should read it. */
  constructor(dataDir: string, looked: string, options?: ErrorOptions) {
    super('ERR_STORE_NOT_FOUND', `no rows to read: ${looked}; start \`netrig up\`, or name the rows with --data-dir DIR or --clickhouse-url URL`, options);
    this.dataDir = dataDir;
  }
}

/** A replay named a database that processors write to: a replay writes into one of its own. */
export class LiveDatabaseError extends NetrigError {
  readonly database: string;
  /** `writers`: what shows the processors, e.g. `processor <id>`, `consumer <name>`. */
  constructor(database: string, writers: string[], options?: ErrorOptions) {
    super('ERR_LIVE_DATABASE',
      `database ${database} is written by processors (${writers.slice(0, 3).join(', ')}${writers.length > 3 ? ', ...' : ''}): a replay writes into a database of its own; name another with --database`,
      options);
    this.database = database;
  }
}

/** NATS refused the credentials (none given, wrong user or password, an expired or unknown .creds). */
export class NatsAuthError extends NetrigError {
  /** `user`: the user name tried, a description of the credential, or null when none was given. */
  constructor(servers: string, user: string | null, options?: ErrorOptions) {
    super('ERR_NATS_AUTH', user
      ? `NATS at ${servers} refused user ${user}: check --nats-user/--nats-password or --nats-creds (netrig up keeps its role passwords in <data-dir>/nats-auth/)`
      : `NATS at ${servers} requires credentials: pass --nats-user and --nats-password (or NETRIG_NATS_PASSWORD), or --nats-creds (netrig up keeps its role passwords in <data-dir>/nats-auth/)`,
    options);
  }
}

/** The TLS handshake with NATS failed: the server's certificate is not trusted (or its name does not match). */
export class NatsTlsError extends NetrigError {
  /** `reason`: node's TLS error code, e.g. SELF_SIGNED_CERT_IN_CHAIN. */
  constructor(servers: string, reason: string, caGiven: boolean, options?: ErrorOptions) {
    super('ERR_NATS_TLS', caGiven
      ? `NATS at ${servers}: TLS failed (${reason}): the certificate does not match --nats-tls-ca or the host name in the URL`
      : `NATS at ${servers} requires TLS and its certificate is not trusted (${reason}): pass --nats-tls-ca <file> (netrig up writes <data-dir>/nats-tls/ca.pem)`,
    options);
  }
}

/** NATS denied the credential a subject: a credential of the wrong role, or a server config without that grant. */
export class NatsPermissionError extends NetrigError {
  readonly subject: string;
  constructor(operation: string, subject: string, options?: ErrorOptions) {
    super('ERR_NATS_PERMISSION', `NATS denied this credential ${operation} on ${subject}: use a credential whose role allows it (netrig up: admin for configure, status and replay; see <data-dir>/nats-auth/)`, options);
    this.subject = subject;
  }
}

/** A NATS operation gave neither an answer nor an error within its bound (a listing cut off by a server restart). */
export class NatsStalledError extends NetrigError {
  constructor(operation: string, boundMs: number, options?: ErrorOptions) {
    super('ERR_NATS_STALLED', `NATS: ${operation} gave no answer within ${boundMs} ms; retried at the next attempt`, options);
  }
}

/**
 * A migration statement has a shape schemas/cluster-ddl.ts does not know how to turn into
 * cluster DDL: refused, so that no statement runs on one server of a cluster only.
 */
export class ClusterDdlError extends NetrigError {
  /** The statement refused, as the migration gives it. */
  readonly statement: string;
  constructor(statement: string, reason: string, options?: ErrorOptions) {
    const flat = statement.replace(/\s+/g, ' ');
    const head = flat.length > 80 ? `${flat.slice(0, 80)}…` : flat;
    super('ERR_CLUSTER_DDL', `--clickhouse-cluster: cannot emit cluster DDL for "${head}" (${reason}): teach schemas/cluster-ddl.ts this statement's shape`, options);
    this.statement = statement;
  }
}
