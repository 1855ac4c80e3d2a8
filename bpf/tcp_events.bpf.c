// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * TCP retransmits (SYN/ACK included), resets sent and received, and packet drops from
 * skb:kfree_skb with their reason and the kernel location that freed the packet.
 * Never sampled and never filtered: these are the events users page on.
 */
#include "lib/netrig.bpf.h"
#include "tcp_events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define ETH_P_IP_ 0x0800
#define ETH_P_IPV6_ 0x86DD

/* Connection id, owner and tuple of a full socket into an event record. */
static __always_inline void event_from_sock(struct tcp_event_rec *r, const struct sock *sk)
{
	struct conn_state *st = conn_get(sk);
	r->hdr.conn_id = conn_id_of(sk, st);
	fill_tuple(&r->tuple, &sk->__sk_common, IPPROTO_TCP_);
	r->netns_ino = sock_netns(sk);
	r->state = sk->__sk_common.skc_state;
	if (st) {
		hdr_owner(&r->hdr, st);
		__builtin_memcpy(r->comm, st->comm, sizeof(r->comm));
	}
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcp_retransmit_skb, const struct sock *sk, const struct sk_buff *skb, int err)
{
	struct tcp_event_rec r = {};
	fill_hdr(&r.hdr, REC_TCP_RETRANSMIT, TCP_EVENT_VERSION, sizeof(r), 0);
	event_from_sock(&r, sk);
	emit(&r, sizeof(r), REC_TCP_RETRANSMIT);
	return 0;
}

/* A SYN/ACK resent for a request socket: no connection (and no cookie) exists yet. */
SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(tcp_retransmit_synack, const struct sock *sk, const struct request_sock *req)
{
	struct tcp_event_rec r = {};
	fill_hdr(&r.hdr, REC_TCP_RETRANSMIT, TCP_EVENT_VERSION, sizeof(r), 0);
	fill_tuple(&r.tuple, &req->__req_common, IPPROTO_TCP_);
	r.netns_ino = sock_netns(sk);
	r.state = TCP_SYN_RECV_;
	r.event_flags = TCP_EV_SYNACK;
	emit(&r, sizeof(r), REC_TCP_RETRANSMIT);
	return 0;
}

/* Packet addresses and ports from an skb's headers; returns the L4 protocol or 0. */
static __always_inline __u8 skb_tuple(struct flow_tuple *t, const struct sk_buff *skb, __u8 *flags)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	__u16 eth_proto = bpf_ntohs(BPF_CORE_READ(skb, protocol));
	__u8 l4 = 0;

	if (nh == (__u16)~0U)
		return 0;
	if (eth_proto == ETH_P_IP_) {
		struct iphdr ip;
		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh))
			return 0;
		map_v4(t->saddr, ip.saddr);
		map_v4(t->daddr, ip.daddr);
		t->family = AF_INET;
		l4 = ip.protocol;
		if (th == (__u16)~0U || th <= nh)
			th = nh + ip.ihl * 4;
	} else if (eth_proto == ETH_P_IPV6_) {
		struct ipv6hdr ip6;
		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh))
			return 0;
		__builtin_memcpy(t->saddr, ip6.saddr.in6_u.u6_addr8, 16);
		__builtin_memcpy(t->daddr, ip6.daddr.in6_u.u6_addr8, 16);
		t->family = AF_INET6;
		l4 = ip6.nexthdr;
		if (th == (__u16)~0U || th <= nh)
			th = nh + sizeof(ip6);
	} else {
		return 0;
	}
	t->protocol = l4;
	if (l4 == IPPROTO_TCP_ || l4 == IPPROTO_UDP_) {
		__be16 ports[2];
		if (!bpf_probe_read_kernel(ports, sizeof(ports), head + th)) {
			t->sport = bpf_ntohs(ports[0]);
			t->dport = bpf_ntohs(ports[1]);
			*flags |= DROP_F_HAS_PORTS;
		}
	}
	return l4;
}

/* Swap packet order (source first) into socket order (local first) for a received packet. */
static __always_inline void tuple_reverse(struct flow_tuple *t)
{
	__u8 tmp[16];
	__builtin_memcpy(tmp, t->saddr, 16);
	__builtin_memcpy(t->saddr, t->daddr, 16);
	__builtin_memcpy(t->daddr, tmp, 16);
	__u16 p = t->sport;
	t->sport = t->dport;
	t->dport = p;
}

static __always_inline int on_send_reset(const struct sock *sk, const struct sk_buff *skb, __u32 reason)
{
	struct tcp_event_rec r = {};
	fill_hdr(&r.hdr, REC_TCP_RESET, TCP_EVENT_VERSION, sizeof(r), 0);
	r.event_flags = TCP_EV_RST_SENT;
	r.reason = reason;
	if (sk) {
		event_from_sock(&r, sk);
	} else if (skb) {
		/* No socket: the tuple comes from the segment that provoked the RST. */
		__u8 unused = 0;
		skb_tuple(&r.tuple, skb, &unused);
		tuple_reverse(&r.tuple);
		r.event_flags |= TCP_EV_NO_SOCKET;
		struct net_device *dev = BPF_CORE_READ(skb, dev);
		if (dev)
			r.netns_ino = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	} else {
		return 0;
	}
	emit(&r, sizeof(r), REC_TCP_RESET);
	return 0;
}

/* The tracepoint's arguments differ between kernels; the loader keeps the one that fits. */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tcp_send_reset, const struct sock *sk, const struct sk_buff *skb,
	     const enum sk_rst_reason reason)
{
	return on_send_reset(sk, skb, reason);
}

/* Before 6.10 the tracepoint gives no reason. */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tcp_send_reset_noreason, const struct sock *sk, const struct sk_buff *skb)
{
	return on_send_reset(sk, skb, 0);
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tcp_receive_reset, struct sock *sk)
{
	struct tcp_event_rec r = {};
	fill_hdr(&r.hdr, REC_TCP_RESET, TCP_EVENT_VERSION, sizeof(r), 0);
	event_from_sock(&r, sk);
	emit(&r, sizeof(r), REC_TCP_RESET);
	return 0;
}

/* A freed packet: `reason` is 0 where the kernel gives none (before 5.17). */
static __always_inline int on_drop(struct sk_buff *skb, void *location, __u32 reason, struct sock *rx_sk,
				   int has_reason)
{
	/* Real drops only: CONSUMED is a normal free; the noisy reasons only when asked for. */
	if (has_reason) {
		__u32 not_specified = bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NOT_SPECIFIED);
		if (reason < not_specified)
			return 0;
		if (reason == not_specified ||
		    (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_QUEUE_PURGE) &&
		     reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_QUEUE_PURGE))) {
			struct netrig_config *cfg = get_config();
			if (!cfg || !(cfg->drop_flags & CFG_DROP_NOISY))
				return 0;
		}
	}
	struct skb_drop_rec r = {};
	if (!skb_tuple(&r.tuple, skb, &r.drop_flags))
		return 0;
	/* The socket the packet belonged to, when the stack knew it. */
	struct sock *sk = skb->sk;
	if (!sk)
		sk = rx_sk;
	__u64 id = 0;
	struct conn_state *st = 0;
	if (sk) {
		st = conn_get(sk);
		id = conn_store == CONN_STORE_TABLE ? (st ? st->conn_id : 0) : sk->__sk_common.skc_cookie.counter;
		r.state = sk->__sk_common.skc_state;
	}
	fill_hdr(&r.hdr, REC_SKB_DROP, SKB_DROP_VERSION, sizeof(r), id);
	if (id)
		hdr_owner(&r.hdr, st);
	r.location = (__u64)location;
	r.reason = reason;
	r.pkt_len_bytes = BPF_CORE_READ(skb, len);
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	if (dev) {
		r.ifindex = BPF_CORE_READ(dev, ifindex);
		r.netns_ino = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	} else if (sk) {
		r.ifindex = BPF_CORE_READ(skb, skb_iif);
		r.netns_ino = sock_netns(sk);
	}
	emit(&r, sizeof(r), REC_SKB_DROP);
	return 0;
}

/* The tracepoint's arguments grew over time; the loader keeps the one program that fits. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason,
	     struct sock *rx_sk)
{
	return on_drop(skb, location, reason, rx_sk, 1);
}

/* 5.17 to 6.10: a reason, no receiving socket. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(kfree_skb_reason, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	return on_drop(skb, location, reason, 0, 1);
}

/* Before 5.17: no reason. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(kfree_skb_noreason, struct sk_buff *skb, void *location)
{
	return on_drop(skb, location, 0, 0, 0);
}

/* Never called: names the wire structs so they reach BTF, where the decoders' layout test reads them. */
__noinline int btf_anchor_tcp_events(struct tcp_event_rec *event, struct skb_drop_rec *drop)
{
	return 0;
}
