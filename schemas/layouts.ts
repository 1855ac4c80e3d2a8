/**
 * Byte layouts of the kernel's wire structs (bpf/*.h, schemas/records.h) as the TypeScript
 * decoders read them. test/unit/layouts-btf.test.ts compares every entry with the BTF of
 * the built bpf/build/netrig.bpf.o, so C and TypeScript cannot drift apart.
 */

/** One C struct: its size and the byte offset of each member the decoders read. */
export interface StructLayout {
  /** The C struct name, as it appears in BTF. */
  readonly name: string;
  readonly size: number;
  readonly fields: Readonly<Record<string, number>>;
}

function layout<const F extends Record<string, number>>(name: string, size: number, fields: F) {
  return { name, size, fields } as const;
}

export const REC_HDR = layout('rec_hdr', 32, {
  kind: 0, version: 2, flags: 3, size_bytes: 4, ts_ns: 8, conn_id: 16, tgid: 24, pid: 28,
});

export const FLOW_TUPLE = layout('flow_tuple', 40, {
  saddr: 0, daddr: 16, sport: 32, dport: 34, family: 36, protocol: 38,
});

export const PEER_ADDR = layout('peer_addr', 20, { addr: 0, port: 16, family: 18 });

export const CONN_OPEN_REC = layout('conn_open_rec', 112, {
  hdr: 0, tuple: 32, cgroup_id: 72, connect_ts_ns: 80, netns_ino: 88, role: 92, conn_flags: 93, comm: 96,
});

export const CONN_INFO_REC = layout('conn_info_rec', 112, {
  hdr: 0, tuple: 32, cgroup_id: 72, open_ts_ns: 80, netns_ino: 88, role: 92, conn_flags: 93, comm: 96,
});

export const CONN_CLOSE_REC = layout('conn_close_rec', 136, {
  hdr: 0, tuple: 32, open_ts_ns: 72, tx_bytes: 80, rx_bytes: 88, cgroup_id: 96, retransmits: 104,
  netns_ino: 108, role: 112, conn_flags: 113, old_state: 114, comm: 116,
});

export const SOCK_DATA_REC = layout('sock_data_rec', 80, {
  hdr: 0, pos_bytes: 32, len_bytes: 40, cap_bytes: 44, offset_bytes: 48, syscall: 52, direction: 54,
  data_flags: 55, peer: 56, payload: 80,
});

export const TCP_EVENT_REC = layout('tcp_event_rec', 104, {
  hdr: 0, tuple: 32, netns_ino: 72, reason: 76, state: 80, event_flags: 81, comm: 88,
});

export const SKB_DROP_REC = layout('skb_drop_rec', 104, {
  hdr: 0, tuple: 32, location: 72, reason: 80, netns_ino: 84, ifindex: 88, pkt_len_bytes: 92, state: 96,
  drop_flags: 97,
});

/** The config map value the edge writes (bpf/config.h). */
export const NETRIG_CONFIG = layout('netrig_config', 16, {
  capture_bytes: 0, sample_per_million: 4, include_mask: 8, drop_flags: 12,
});

/** The filters map key (bpf/config.h). */
export const FILTER_KEY = layout('filter_key', 16, { type: 0, value: 8 });

/** Every layout the BTF test checks. */
export const ALL_LAYOUTS: readonly StructLayout[] = [
  REC_HDR, FLOW_TUPLE, PEER_ADDR, CONN_OPEN_REC, CONN_INFO_REC, CONN_CLOSE_REC, SOCK_DATA_REC,
  TCP_EVENT_REC, SKB_DROP_REC, NETRIG_CONFIG, FILTER_KEY,
];
