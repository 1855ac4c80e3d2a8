/* SPDX-License-Identifier: Apache-2.0 */
/* Run-time configuration the edge writes into the `config` and `filters` maps. */
#ifndef NETRIG_CONFIG_H
#define NETRIG_CONFIG_H

/* config map value; one entry, rewritten by the edge without reloading. */
struct netrig_config {
	__u32 capture_bytes;      /* most payload bytes captured per syscall */
	__u32 sample_per_million; /* share of sockets whose payload is captured */
	__u32 include_mask;       /* bit (1 << filter_type) set: that type has include entries */
	__u32 drop_flags;         /* enum config_drop_flags */
};

enum config_drop_flags {
	/* also report drops that are mostly noise: reason NOT_SPECIFIED, and QUEUE_PURGE
	 * (buffers freed when a socket closes with data still queued) */
	CFG_DROP_NOISY = 1 << 0,
};

enum filter_type {
	FILTER_PID = 0,    /* value: tgid */
	FILTER_PORT = 1,   /* value: local or remote port */
	FILTER_CGROUP = 2, /* value: cgroup v2 id */
	FILTER_NETNS = 3,  /* value: network namespace inode */
};

enum filter_action {
	FILTER_INCLUDE = 1,
	FILTER_EXCLUDE = 2,
};

/* filters map key; the value is an enum filter_action. */
struct filter_key {
	__u32 type; /* enum filter_type */
	__u32 pad;
	__u64 value;
};

#endif /* NETRIG_CONFIG_H */
