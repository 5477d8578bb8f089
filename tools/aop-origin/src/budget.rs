//! The connection budget: how many client connections the guard holds, and who gives way
//! when it is full.
//!
//! An attacker who cannot pass the handshake can still open connections: plain TCP that
//! never sends a ClientHello, handshakes left half done, or (on an `optional` site)
//! certificate-less TLS connections held idle. None of them may lock the edge out. So
//! connections are in one of three classes — *in handshake*, *unauthenticated*
//! (established with a verdict other than SUCCESS) and *authenticated* — and:
//!
//! - a peer (an IPv4 address, or an IPv6 /64: one host's share of addresses) with
//!   `per_peer_handshakes` handshakes in progress that opens another loses its oldest one;
//!   likewise `per_peer_unauthenticated` for established unauthenticated connections;
//! - with `max_handshakes` handshakes in progress, a new connection closes the oldest
//!   *silent* one (no byte of a ClientHello yet), and only if there is none the oldest
//!   handshake: a churn of fresh TCP connections cannot close the edge's handshake once
//!   its ClientHello is in;
//! - with `max_connections` connections open, a new connection closes the oldest
//!   connection that is silent, in handshake or unauthenticated; if every connection is
//!   authenticated, it closes the oldest connection of the site holding the most, so one
//!   site's clients (the shared default site's, say, trusting a CA many can get
//!   certificates from) cannot hold every slot against another site's edge.
//!
//! So a connection whose certificate passes is admitted while anything weaker holds a
//! slot, and an authenticated connection is closed to make room only when its site holds
//! more than any other.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// The limits (from the config).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Caps {
    pub(crate) max_connections: usize,
    pub(crate) max_handshakes: usize,
    pub(crate) per_peer_handshakes: usize,
    pub(crate) per_peer_unauthenticated: usize,
}

/// Why a connection was closed to make room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Evicted {
    /// Its peer opened more handshakes than `max_handshakes_per_peer`.
    PeerHandshakes,
    /// Its peer held more unauthenticated connections than `max_unauthenticated_per_peer`.
    PeerUnauthenticated,
    /// `max_handshakes` handshakes were in progress.
    Handshakes,
    /// `max_connections` were open, and it was the oldest unauthenticated one.
    Connections,
    /// `max_connections` were open, all authenticated, and it was the oldest of the site
    /// holding the most.
    SiteShare,
}

impl Evicted {
    /// The word logged and counted.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::PeerHandshakes => "max_handshakes_per_peer",
            Self::PeerUnauthenticated => "max_unauthenticated_per_peer",
            Self::Handshakes => "max_handshakes",
            Self::Connections => "max_connections",
            Self::SiteShare => "max_connections_site_share",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Handshake,
    Unauthenticated,
    Authenticated,
}

struct Entry {
    /// `None` until a PROXY protocol header names it (see [`Budget::admit_proxied`]).
    peer: Option<IpAddr>,
    class: Class,
    /// The site of an authenticated connection.
    site: Option<Arc<str>>,
    evict: Arc<Signal>,
}

/// How an evicted connection learns it must go, and why.
#[derive(Default)]
pub(crate) struct Signal {
    notify: Notify,
    why: Mutex<Option<Evicted>>,
}

#[derive(Default)]
struct PeerCount {
    handshakes: BTreeSet<u64>,
    unauthenticated: BTreeSet<u64>,
}

#[derive(Default)]
struct State {
    next: u64,
    entries: HashMap<u64, Entry>,
    /// Oldest first (sequence numbers grow with admission time).
    handshakes: BTreeSet<u64>,
    /// The handshakes that had not sent a byte of a ClientHello when last looked at (a
    /// subset of `handshakes`), with a duplicate of the socket to look again before
    /// closing one.
    silent: BTreeMap<u64, Quiet>,
    unauthenticated: BTreeSet<u64>,
    /// Authenticated connections by site.
    sites: HashMap<Arc<str>, BTreeSet<u64>>,
    peers: HashMap<IpAddr, PeerCount>,
}

/// A silent connection, as the budget looks at it again before closing it.
struct Quiet {
    /// A duplicate of the socket (`None` if it could not be made: taken as silent).
    socket: Option<OwnedFd>,
    /// On a PROXY protocol listener, its header not yet read: the bytes waiting are the
    /// header's until a whole one is there with more after it.
    header: bool,
}

impl Quiet {
    /// Whether a byte of a ClientHello is waiting (peeked, not taken).
    fn spoke(&self) -> bool {
        use rustix::net::RecvFlags;
        let Some(fd) = &self.socket else {
            return false;
        };
        let mut buf = [0u8; crate::proxy_protocol::V2_MAX + 1];
        let want = if self.header { buf.len() } else { 1 };
        let Ok((_, n)) =
            rustix::net::recv(fd, &mut buf[..want], RecvFlags::PEEK | RecvFlags::DONTWAIT)
        else {
            return false;
        };
        if !self.header {
            return n > 0;
        }
        // A balancer sends its header the moment its client connects: only what follows
        // a whole header is the client's.
        matches!(crate::proxy_protocol::parse(&buf[..n]),
            crate::proxy_protocol::Parsed::Header { len, .. } if n > len)
    }
}

/// The peer a cap counts: an IPv4 address, or the /64 an IPv6 address is in (one host
/// or customer is routinely given a whole /64). IPv4-mapped IPv6 counts as IPv4.
pub(crate) fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

/// The budget; shared by every listener.
pub(crate) struct Budget {
    /// Swapped by a reload ([`Budget::set_caps`]): connections admitted after it meet the
    /// new caps; none is closed for the change itself.
    caps: Mutex<Caps>,
    state: Mutex<State>,
}

/// One admitted connection's place in the budget; released when dropped.
pub(crate) struct Slot {
    budget: Arc<Budget>,
    seq: u64,
    signal: Arc<Signal>,
}

impl Budget {
    pub(crate) fn new(caps: Caps) -> Arc<Self> {
        Arc::new(Self {
            caps: Mutex::new(caps),
            state: Mutex::new(State::default()),
        })
    }

    /// The caps in force.
    pub(crate) fn caps(&self) -> Caps {
        *self.caps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A reload's new caps (`max_connections` stays: it is bound to the descriptors
    /// counted at start).
    pub(crate) fn set_caps(&self, caps: Caps) {
        *self.caps.lock().unwrap_or_else(PoisonError::into_inner) = caps;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admit a new connection from `peer` (in handshake; see [`Start`]), closing others to
    /// make room as the module docs say; `None` if every open connection is authenticated and the
    /// budget is full.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr, start: Start) -> Option<Slot> {
        self.admit_as(Some(peer), start, false)
    }

    /// As [`Budget::admit`], for a connection on a PROXY protocol listener: its peer (the
    /// load balancer's address, the same for every client) is not counted against the
    /// per-peer caps; the client's address is, once its header names it
    /// ([`Slot::identified`]). The overall caps hold from the start. It is silent until a
    /// byte of its ClientHello follows the header (the header alone is sent by the
    /// balancer, whatever its client does): pass [`Start::Silent`] whatever has arrived.
    pub(crate) fn admit_proxied(self: &Arc<Self>, start: Start) -> Option<Slot> {
        self.admit_as(None, start, true)
    }

    fn admit_as(
        self: &Arc<Self>,
        peer: Option<IpAddr>,
        start: Start,
        header: bool,
    ) -> Option<Slot> {
        let peer = peer.map(peer_key);
        let caps = self.caps();
        let mut st = self.lock();
        if let Some(peer) = peer {
            st.peer_handshake_room(peer, caps);
        }
        // `while`: after a reload lowers the cap, one admission brings the count under it.
        while st.handshakes.len() >= caps.max_handshakes.max(1)
            && let Some(seq) = st.oldest_silent().or(st.handshakes.first().copied())
        {
            st.evict(seq, Evicted::Handshakes);
        }
        if st.entries.len() >= caps.max_connections.max(1) {
            let weakest = match (
                st.oldest_silent(),
                st.handshakes.first(),
                st.unauthenticated.first(),
            ) {
                (Some(s), _, _) => Some(s),
                (None, Some(&a), Some(&b)) => Some(a.min(b)),
                (None, a, b) => a.or(b).copied(),
            };
            match weakest {
                Some(seq) => st.evict(seq, Evicted::Connections),
                None => {
                    let largest = st
                        .sites
                        .values()
                        .max_by_key(|c| c.len())
                        .and_then(|c| c.first().copied());
                    st.evict(largest?, Evicted::SiteShare);
                }
            }
        }
        let seq = st.next;
        st.next += 1;
        let signal = Arc::new(Signal::default());
        st.entries.insert(
            seq,
            Entry {
                peer,
                class: Class::Handshake,
                site: None,
                evict: signal.clone(),
            },
        );
        st.handshakes.insert(seq);
        if let Start::Silent(socket) = start {
            st.silent.insert(seq, Quiet { socket, header });
        }
        if let Some(peer) = peer {
            st.peers.entry(peer).or_default().handshakes.insert(seq);
        }
        Some(Slot {
            budget: self.clone(),
            seq,
            signal,
        })
    }

    /// Open connections, by class: (in handshake, unauthenticated, authenticated).
    #[cfg(test)]
    fn counts(&self) -> (usize, usize, usize) {
        let st = self.lock();
        let auth = st.entries.len() - st.handshakes.len() - st.unauthenticated.len();
        (st.handshakes.len(), st.unauthenticated.len(), auth)
    }
}

/// How a connection starts, for the budget.
pub(crate) enum Start {
    /// The first bytes of its ClientHello are already in.
    Talking,
    /// Nothing yet; with a duplicate of the socket to look again before the budget
    /// closes it (so a connection whose task has not yet run is not taken for silent).
    Silent(Option<OwnedFd>),
}

impl State {
    /// `peer` opens a handshake: at its cap, its oldest handshakes are closed until it is
    /// under it (more than one after a reload lowered the cap).
    fn peer_handshake_room(&mut self, peer: IpAddr, caps: Caps) {
        while let Some(seq) = self
            .peers
            .get(&peer)
            .filter(|p| p.handshakes.len() >= caps.per_peer_handshakes.max(1))
            .and_then(|p| p.handshakes.first().copied())
        {
            self.evict(seq, Evicted::PeerHandshakes);
        }
    }

    /// The oldest handshake that is still silent, looking again at each candidate's
    /// socket: one whose bytes have arrived since is moved to talking, not closed.
    fn oldest_silent(&mut self) -> Option<u64> {
        loop {
            let (&seq, quiet) = self.silent.first_key_value()?;
            if !quiet.spoke() {
                return Some(seq);
            }
            self.silent.remove(&seq);
        }
    }

    /// Take `seq` out of the budget and tell its task to close.
    fn evict(&mut self, seq: u64, why: Evicted) {
        if let Some(e) = self.remove(seq) {
            *e.evict.why.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
            e.evict.notify.notify_one();
        }
    }

    fn remove(&mut self, seq: u64) -> Option<Entry> {
        let e = self.entries.remove(&seq)?;
        self.handshakes.remove(&seq);
        self.silent.remove(&seq);
        self.unauthenticated.remove(&seq);
        if let Some(site) = &e.site
            && let Some(set) = self.sites.get_mut(site)
        {
            set.remove(&seq);
            if set.is_empty() {
                self.sites.remove(site);
            }
        }
        if let Some(peer) = e.peer
            && let Some(p) = self.peers.get_mut(&peer)
        {
            p.handshakes.remove(&seq);
            p.unauthenticated.remove(&seq);
            if p.handshakes.is_empty() && p.unauthenticated.is_empty() {
                self.peers.remove(&peer);
            }
        }
        Some(e)
    }
}

impl Slot {
    /// The handshake completed: the connection is authenticated (its certificate passed)
    /// or not. An unauthenticated one past its peer's cap closes that peer's oldest.
    /// The first bytes of the ClientHello arrived: no longer silent.
    pub(crate) fn talking(&self) {
        self.budget.lock().silent.remove(&self.seq);
    }

    /// Still silent with its PROXY protocol header read (all its balancer sent so far):
    /// until the first byte of a ClientHello it gives way first, like a bare TCP
    /// connection. `socket` is a duplicate to look at again before closing it, now
    /// without the header (see [`Start::Silent`]).
    pub(crate) fn silent(&self, socket: Option<OwnedFd>) {
        let mut st = self.budget.lock();
        if st.handshakes.contains(&self.seq) {
            st.silent.insert(
                self.seq,
                Quiet {
                    socket,
                    header: false,
                },
            );
        }
    }

    /// A PROXY protocol header named the connection's client (or the proxy itself):
    /// from now on the per-peer caps count it against `peer`, and if `peer` is at its
    /// handshake cap its oldest handshake is closed, as for a new connection.
    pub(crate) fn identified(&self, peer: IpAddr) {
        let peer = peer_key(peer);
        let caps = self.budget.caps();
        let mut st = self.budget.lock();
        if !st.entries.contains_key(&self.seq) {
            return; // already evicted
        }
        st.peer_handshake_room(peer, caps);
        if let Some(e) = st.entries.get_mut(&self.seq) {
            e.peer = Some(peer);
            st.peers
                .entry(peer)
                .or_default()
                .handshakes
                .insert(self.seq);
        }
    }

    /// The handshake completed: the connection is authenticated for `site` (its
    /// certificate passed) or not. An unauthenticated one past its peer's cap closes that
    /// peer's oldest.
    pub(crate) fn established(&self, authenticated: Option<Arc<str>>) {
        let per_peer_cap = self.budget.caps().per_peer_unauthenticated;
        let mut st = self.budget.lock();
        let st = &mut *st;
        let Some(e) = st.entries.get_mut(&self.seq) else {
            return; // already evicted
        };
        st.handshakes.remove(&self.seq);
        st.silent.remove(&self.seq);
        let Some(peer) = e.peer else {
            // Never named by a header (the guard names every proxied connection before
            // its handshake): counted by the overall caps only.
            e.class = if authenticated.is_some() {
                Class::Authenticated
            } else {
                Class::Unauthenticated
            };
            match authenticated {
                Some(site) => {
                    e.site = Some(site.clone());
                    st.sites.entry(site).or_default().insert(self.seq);
                }
                None => {
                    st.unauthenticated.insert(self.seq);
                }
            }
            return;
        };
        let p = st.peers.entry(peer).or_default();
        p.handshakes.remove(&self.seq);
        if let Some(site) = authenticated {
            e.class = Class::Authenticated;
            e.site = Some(site.clone());
            st.sites.entry(site).or_default().insert(self.seq);
            if p.handshakes.is_empty() && p.unauthenticated.is_empty() {
                st.peers.remove(&peer);
            }
            return;
        }
        e.class = Class::Unauthenticated;
        // Over the cap (by more than one after a reload lowered it): the oldest go.
        let excess = (p.unauthenticated.len() + 1).saturating_sub(per_peer_cap.max(1));
        let oldest: Vec<u64> = p.unauthenticated.iter().take(excess).copied().collect();
        p.unauthenticated.insert(self.seq);
        st.unauthenticated.insert(self.seq);
        for seq in oldest {
            st.evict(seq, Evicted::PeerUnauthenticated);
        }
    }

    /// Completes when the budget closes this connection to make room; says why.
    pub(crate) async fn evicted(&self) -> Evicted {
        loop {
            self.signal.notify.notified().await;
            if let Some(why) = *self
                .signal
                .why
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
            {
                return why;
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.budget.lock().remove(self.seq);
    }
}

/// Each entry's class (for the tests).
#[cfg(test)]
fn classes(b: &Budget) -> BTreeMap<u64, Class> {
    b.lock()
        .entries
        .iter()
        .map(|(k, e)| (*k, e.class))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(total: usize, hs: usize, per_hs: usize, per_unauth: usize) -> Caps {
        Caps {
            max_connections: total,
            max_handshakes: hs,
            per_peer_handshakes: per_hs,
            per_peer_unauthenticated: per_unauth,
        }
    }

    fn site(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn why(s: &Slot) -> Option<Evicted> {
        *s.signal.why.lock().unwrap()
    }

    #[test]
    fn a_peer_over_its_handshake_cap_loses_its_oldest() {
        let b = Budget::new(caps(100, 100, 2, 100));
        let a1 = b.admit(ip(1), Start::Silent(None)).unwrap();
        let other = b.admit(ip(2), Start::Silent(None)).unwrap();
        let a2 = b.admit(ip(1), Start::Silent(None)).unwrap();
        let a3 = b.admit(ip(1), Start::Silent(None)).unwrap();
        assert_eq!(why(&a1), Some(Evicted::PeerHandshakes));
        assert_eq!((why(&a2), why(&a3), why(&other)), (None, None, None));
        assert_eq!(b.counts(), (3, 0, 0));
    }

    #[test]
    fn full_budget_closes_the_oldest_unauthenticated_before_an_authenticated() {
        let b = Budget::new(caps(3, 100, 100, 100));
        let edge = b.admit(ip(9), Start::Silent(None)).unwrap();
        edge.established(Some(site("a")));
        let idle = b.admit(ip(1), Start::Silent(None)).unwrap();
        idle.established(None);
        let hs = b.admit(ip(1), Start::Silent(None)).unwrap();
        hs.talking();
        // Full: the oldest weak one (the unauthenticated, older than the handshake) goes.
        let next = b.admit(ip(2), Start::Silent(None)).unwrap();
        assert_eq!(why(&idle), Some(Evicted::Connections));
        assert_eq!(why(&edge), None);
        drop(idle);
        next.established(Some(site("a")));
        // Now the handshake is the only weak one.
        let again = b.admit(ip(3), Start::Silent(None)).unwrap();
        assert_eq!(why(&hs), Some(Evicted::Connections));
        again.established(Some(site("a")));
        drop(hs);
        assert_eq!(b.counts(), (0, 0, 3));
        assert!(classes(&b).values().all(|c| *c == Class::Authenticated));
        // Every slot authenticated, all one site's: its oldest gives way.
        let newer = b.admit(ip(4), Start::Silent(None)).unwrap();
        assert_eq!(why(&edge), Some(Evicted::SiteShare));
        drop(newer);
    }

    #[test]
    fn the_site_holding_the_most_gives_way_to_another_sites_edge() {
        let b = Budget::new(caps(4, 100, 100, 100));
        let shared: Vec<Slot> = (0..3)
            .map(|i| b.admit(ip(10 + i), Start::Silent(None)).unwrap())
            .collect();
        for s in &shared {
            s.established(Some(site("shared")));
        }
        let edge = b.admit(ip(1), Start::Silent(None)).unwrap();
        edge.established(Some(site("a")));
        // Full, all authenticated: a new connection closes the shared site's oldest,
        // never the smaller site's.
        let next = b.admit(ip(2), Start::Silent(None)).unwrap();
        assert_eq!(why(&shared[0]), Some(Evicted::SiteShare));
        assert_eq!(why(&edge), None);
        drop(next);
    }

    #[test]
    fn a_silent_handshake_goes_before_one_that_has_spoken() {
        let b = Budget::new(caps(100, 2, 100, 100));
        let edge = b.admit(ip(1), Start::Silent(None)).unwrap();
        edge.talking();
        let silent = b.admit(ip(2), Start::Silent(None)).unwrap();
        let next = b.admit(ip(3), Start::Silent(None)).unwrap();
        assert_eq!(why(&silent), Some(Evicted::Handshakes));
        assert_eq!(why(&edge), None);
        drop(next);
        // Talking from admission (its ClientHello came with the connection): the same.
        let b = Budget::new(caps(100, 2, 100, 100));
        let edge = b.admit(ip(1), Start::Talking).unwrap();
        let silent = b.admit(ip(2), Start::Silent(None)).unwrap();
        let next = b.admit(ip(3), Start::Silent(None)).unwrap();
        assert_eq!(why(&silent), Some(Evicted::Handshakes));
        assert_eq!(why(&edge), None);
        drop(next);
    }

    #[test]
    fn ipv6_peers_count_by_slash_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(peer_key(a), peer_key(b));
        assert_ne!(peer_key(a), peer_key(c));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(peer_key(mapped), ip(1));
        let budget = Budget::new(caps(100, 100, 1, 100));
        let first = budget.admit(a, Start::Silent(None)).unwrap();
        let second = budget.admit(b, Start::Silent(None)).unwrap();
        assert_eq!(why(&first), Some(Evicted::PeerHandshakes));
        drop(second);
    }

    #[test]
    fn handshake_cap_closes_the_oldest_handshake() {
        let b = Budget::new(caps(100, 2, 100, 100));
        let h1 = b.admit(ip(1), Start::Silent(None)).unwrap();
        let h2 = b.admit(ip(2), Start::Silent(None)).unwrap();
        let h3 = b.admit(ip(3), Start::Silent(None)).unwrap();
        assert_eq!(why(&h1), Some(Evicted::Handshakes));
        assert_eq!((why(&h2), why(&h3)), (None, None));
    }

    /// Behind a load balancer every connection has the balancer's address: the per-peer
    /// caps count the address its header names, never the balancer's.
    #[test]
    fn proxied_connections_count_against_the_header_address() {
        let b = Budget::new(caps(100, 100, 2, 1));
        // Three clients through one balancer, none over its cap.
        let slots: Vec<Slot> = (1..=3)
            .map(|i| {
                let s = b.admit_proxied(Start::Silent(None)).unwrap();
                s.identified(ip(i));
                s
            })
            .collect();
        assert!(slots.iter().all(|s| why(s).is_none()));
        // Waiting for its header, a connection is in no peer's count.
        let unnamed = b.admit_proxied(Start::Silent(None)).unwrap();
        assert_eq!(b.counts(), (4, 0, 0));
        // One client over its handshake cap loses its own oldest, not another's.
        let again = b.admit_proxied(Start::Silent(None)).unwrap();
        again.identified(ip(1));
        let third = b.admit_proxied(Start::Silent(None)).unwrap();
        third.identified(ip(1));
        assert_eq!(why(&slots[0]), Some(Evicted::PeerHandshakes));
        assert_eq!(
            (why(&slots[1]), why(&slots[2]), why(&again)),
            (None, None, None)
        );
        // The unauthenticated cap too.
        slots[1].established(None);
        let next = b.admit_proxied(Start::Silent(None)).unwrap();
        next.identified(ip(2));
        next.established(None);
        assert_eq!(why(&slots[1]), Some(Evicted::PeerUnauthenticated));
        drop((slots, unnamed, again, third, next));
        assert_eq!(b.counts(), (0, 0, 0));
        assert!(b.lock().peers.is_empty());
    }

    #[test]
    fn unauthenticated_per_peer_cap() {
        let b = Budget::new(caps(100, 100, 100, 2));
        let slots: Vec<Slot> = (0..3)
            .map(|_| b.admit(ip(1), Start::Silent(None)).unwrap())
            .collect();
        for s in &slots {
            s.established(None);
        }
        assert_eq!(why(&slots[0]), Some(Evicted::PeerUnauthenticated));
        assert_eq!(b.counts(), (0, 2, 0));
        drop(slots);
        assert_eq!(b.counts(), (0, 0, 0));
        assert!(b.lock().peers.is_empty());
    }

    /// A reload that lowers a cap: the next admission (or establishment) brings the count
    /// under it, closing as many of the oldest as it takes, not one.
    #[test]
    fn lowered_caps_converge_at_the_next_admission() {
        let b = Budget::new(caps(100, 100, 100, 100));
        let hs: Vec<Slot> = (0..5)
            .map(|_| b.admit(ip(1), Start::Silent(None)).unwrap())
            .collect();
        b.set_caps(caps(100, 100, 2, 100));
        let newer = b.admit(ip(1), Start::Silent(None)).unwrap();
        let closed = |v: &[Slot], why_: Evicted| v.iter().filter(|s| why(s) == Some(why_)).count();
        assert_eq!(closed(&hs, Evicted::PeerHandshakes), 4);
        assert_eq!((why(&hs[4]), why(&newer)), (None, None));
        drop((hs, newer));

        let all: Vec<Slot> = (1..=5)
            .map(|i| b.admit(ip(i), Start::Silent(None)).unwrap())
            .collect();
        b.set_caps(caps(100, 2, 100, 100));
        let newer = b.admit(ip(9), Start::Silent(None)).unwrap();
        assert_eq!(closed(&all, Evicted::Handshakes), 4);
        assert_eq!(b.counts(), (2, 0, 0));
        drop((all, newer));

        b.set_caps(caps(100, 100, 100, 100));
        let idle: Vec<Slot> = (0..5)
            .map(|_| b.admit(ip(1), Start::Silent(None)).unwrap())
            .collect();
        for s in &idle[..4] {
            s.established(None);
        }
        b.set_caps(caps(100, 100, 100, 2));
        idle[4].established(None);
        assert_eq!(closed(&idle, Evicted::PeerUnauthenticated), 3);
        assert_eq!(b.counts(), (0, 2, 0));
    }

    /// A proxied connection's waiting bytes are its balancer's header until a whole one
    /// has more after it: only then has its client spoken.
    #[test]
    fn a_pending_header_is_not_a_client_speaking() {
        use std::io::Write as _;
        let header = b"PROXY TCP4 198.51.100.1 198.51.100.2 40001 443\r\n";
        for (sent, header_pending, spoke) in [
            (&b""[..], true, false),
            (&header[..10], true, false),
            (&header[..], true, false),
            (
                &b"PROXY TCP4 198.51.100.1 198.51.100.2 40001 443\r\n\x16"[..],
                true,
                true,
            ),
            (&b"garbage"[..], true, false),
            (&b"\x16"[..], false, true),
            (&b""[..], false, false),
        ] {
            let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
            ours.write_all(sent).unwrap();
            let quiet = Quiet {
                socket: Some(OwnedFd::from(theirs)),
                header: header_pending,
            };
            assert_eq!(quiet.spoke(), spoke, "{sent:?} header={header_pending}");
        }
    }

    /// A proxied connection whose header is in but no ClientHello byte yet is silent
    /// again: a new connection at `max_handshakes` closes it, not a handshake under way.
    #[test]
    fn a_header_only_connection_is_silent_again() {
        let b = Budget::new(caps(100, 2, 100, 100));
        let real = b.admit_proxied(Start::Silent(None)).unwrap();
        real.identified(ip(1));
        real.talking();
        let bare = b.admit_proxied(Start::Silent(None)).unwrap();
        bare.identified(ip(2));
        bare.silent(None);
        let _next = b.admit_proxied(Start::Talking).unwrap();
        assert_eq!((why(&real), why(&bare)), (None, Some(Evicted::Handshakes)));
    }
}
