/** The two ways of naming a socket's side that every L7 protocol uses. */

/** Kernel direction of a socket's bytes: 0 egress (sent), 1 ingress (received). */
export type Dir = 0 | 1;

/** The kernel's guess of a socket's side: a client sends requests (egress). */
export type RoleHint = 'client' | 'server' | 'unknown';
