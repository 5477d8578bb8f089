//! The connection budget: how many client connections the guard holds, and who gives way
//! when it is full.
//!
//! An attacker who cannot pass the handshake can still open connections: plain TCP that
//! never sends a ClientHello, handshakes left half done, or (on an `optional` site)
//! certificate-less TLS connections held idle. None of them may lock the edge out. So
//! connections are in one of three classes — *in handshake*, *unauthenticated*
//! (established with a verdict other than SUCCESS) and *authenticated* — and:
//!
//! - a peer address with `per_peer_handshakes` handshakes in progress that opens
//!   another loses its oldest one; likewise `per_peer_unauthenticated` for established
//!   unauthenticated connections;
//! - with `max_handshakes` handshakes in progress, a new connection closes the oldest
//!   handshake;
//! - with `max_connections` connections open, a new connection closes the oldest
//!   connection that is in handshake or unauthenticated; only when every connection is
//!   authenticated is the new one refused.
//!
//! So a connection whose certificate passes is always admitted while anything weaker
//! holds a slot, and authenticated connections are never closed to make room.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
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
}

impl Evicted {
    /// The word logged and counted.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::PeerHandshakes => "max_handshakes_per_peer",
            Self::PeerUnauthenticated => "max_unauthenticated_per_peer",
            Self::Handshakes => "max_handshakes",
            Self::Connections => "max_connections",
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
    peer: IpAddr,
    class: Class,
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
    unauthenticated: BTreeSet<u64>,
    peers: HashMap<IpAddr, PeerCount>,
}

/// The budget; shared by every listener.
pub(crate) struct Budget {
    caps: Caps,
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
            caps,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admit a new connection from `peer` (in handshake), closing others to make room as
    /// the module docs say; `None` if every open connection is authenticated and the
    /// budget is full.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Slot> {
        let mut st = self.lock();
        let caps = self.caps;
        let peer_oldest = st
            .peers
            .get(&peer)
            .filter(|p| p.handshakes.len() >= caps.per_peer_handshakes.max(1))
            .and_then(|p| p.handshakes.first().copied());
        if let Some(seq) = peer_oldest {
            st.evict(seq, Evicted::PeerHandshakes);
        }
        if st.handshakes.len() >= caps.max_handshakes.max(1)
            && let Some(&seq) = st.handshakes.first()
        {
            st.evict(seq, Evicted::Handshakes);
        }
        if st.entries.len() >= caps.max_connections.max(1) {
            let oldest = match (st.handshakes.first(), st.unauthenticated.first()) {
                (Some(&a), Some(&b)) => Some(a.min(b)),
                (a, b) => a.or(b).copied(),
            };
            st.evict(oldest?, Evicted::Connections);
        }
        let seq = st.next;
        st.next += 1;
        let signal = Arc::new(Signal::default());
        st.entries.insert(
            seq,
            Entry {
                peer,
                class: Class::Handshake,
                evict: signal.clone(),
            },
        );
        st.handshakes.insert(seq);
        st.peers.entry(peer).or_default().handshakes.insert(seq);
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

impl State {
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
        self.unauthenticated.remove(&seq);
        if let Some(p) = self.peers.get_mut(&e.peer) {
            p.handshakes.remove(&seq);
            p.unauthenticated.remove(&seq);
            if p.handshakes.is_empty() && p.unauthenticated.is_empty() {
                self.peers.remove(&e.peer);
            }
        }
        Some(e)
    }
}

impl Slot {
    /// The handshake completed: the connection is authenticated (its certificate passed)
    /// or not. An unauthenticated one past its peer's cap closes that peer's oldest.
    pub(crate) fn established(&self, authenticated: bool) {
        let per_peer_cap = self.budget.caps.per_peer_unauthenticated;
        let mut st = self.budget.lock();
        let st = &mut *st;
        let Some(e) = st.entries.get_mut(&self.seq) else {
            return; // already evicted
        };
        let peer = e.peer;
        e.class = if authenticated {
            Class::Authenticated
        } else {
            Class::Unauthenticated
        };
        st.handshakes.remove(&self.seq);
        let p = st.peers.entry(peer).or_default();
        p.handshakes.remove(&self.seq);
        if authenticated {
            if p.handshakes.is_empty() && p.unauthenticated.is_empty() {
                st.peers.remove(&peer);
            }
            return;
        }
        let oldest = (p.unauthenticated.len() >= per_peer_cap.max(1))
            .then(|| p.unauthenticated.first().copied())
            .flatten();
        p.unauthenticated.insert(self.seq);
        st.unauthenticated.insert(self.seq);
        if let Some(seq) = oldest {
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
fn classes(b: &Budget) -> std::collections::BTreeMap<u64, Class> {
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

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn why(s: &Slot) -> Option<Evicted> {
        *s.signal.why.lock().unwrap()
    }

    #[test]
    fn a_peer_over_its_handshake_cap_loses_its_oldest() {
        let b = Budget::new(caps(100, 100, 2, 100));
        let a1 = b.admit(ip(1)).unwrap();
        let other = b.admit(ip(2)).unwrap();
        let a2 = b.admit(ip(1)).unwrap();
        let a3 = b.admit(ip(1)).unwrap();
        assert_eq!(why(&a1), Some(Evicted::PeerHandshakes));
        assert_eq!((why(&a2), why(&a3), why(&other)), (None, None, None));
        assert_eq!(b.counts(), (3, 0, 0));
    }

    #[test]
    fn full_budget_closes_the_oldest_unauthenticated_never_an_authenticated() {
        let b = Budget::new(caps(3, 100, 100, 100));
        let edge = b.admit(ip(9)).unwrap();
        edge.established(true);
        let idle = b.admit(ip(1)).unwrap();
        idle.established(false);
        let hs = b.admit(ip(1)).unwrap();
        // Full: the oldest weak one (the unauthenticated, older than the handshake) goes.
        let next = b.admit(ip(2)).unwrap();
        assert_eq!(why(&idle), Some(Evicted::Connections));
        assert_eq!(why(&edge), None);
        drop(idle);
        next.established(true);
        // Now the handshake is the only weak one.
        let again = b.admit(ip(3)).unwrap();
        assert_eq!(why(&hs), Some(Evicted::Connections));
        again.established(true);
        drop(hs);
        // Every slot authenticated: refused.
        assert!(b.admit(ip(4)).is_none());
        assert_eq!(b.counts(), (0, 0, 3));
        assert!(classes(&b).values().all(|c| *c == Class::Authenticated));
    }

    #[test]
    fn handshake_cap_closes_the_oldest_handshake() {
        let b = Budget::new(caps(100, 2, 100, 100));
        let h1 = b.admit(ip(1)).unwrap();
        let h2 = b.admit(ip(2)).unwrap();
        let h3 = b.admit(ip(3)).unwrap();
        assert_eq!(why(&h1), Some(Evicted::Handshakes));
        assert_eq!((why(&h2), why(&h3)), (None, None));
    }

    #[test]
    fn unauthenticated_per_peer_cap() {
        let b = Budget::new(caps(100, 100, 100, 2));
        let slots: Vec<Slot> = (0..3).map(|_| b.admit(ip(1)).unwrap()).collect();
        for s in &slots {
            s.established(false);
        }
        assert_eq!(why(&slots[0]), Some(Evicted::PeerUnauthenticated));
        assert_eq!(b.counts(), (0, 2, 0));
        drop(slots);
        assert_eq!(b.counts(), (0, 0, 0));
        assert!(b.lock().peers.is_empty());
    }
}
