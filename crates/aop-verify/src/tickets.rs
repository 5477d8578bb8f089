//! Session tickets shared by a fleet: origins given the same ticket key files resume each
//! other's TLS sessions (as nginx's `ssl_session_ticket_key`), and a ticket stays bound
//! to the site and the policy that issued it.
//!
//! A key file is nginx's: 80 bytes (`openssl rand 80`: a 16-byte name, a 32-byte AES key
//! and a 32-byte HMAC key) or 48 bytes (16 + 16 + 16), read whole as a secret. The first
//! file encrypts new tickets; every file decrypts. Rotate by putting a new key first and
//! keeping the old one second for a ticket lifetime, then reloading.
//!
//! No file key encrypts a ticket itself. Each site derives its own key with HKDF-SHA256
//! from the file's 48 or 80 bytes and, as the info, the site's name and
//! [`crate::Rule`]'s policy fingerprint (its hostnames, mode, trust anchors, pins, name
//! allowlist, depth and EKU setting: see `Policy::load`). A ticket from another site, or
//! from the same site before its trust changed, names a key this site does not have and
//! is refused unread (a full handshake follows); another origin with the same key file
//! and the same policy derives the same key and resumes it. CRLs are not in the
//! fingerprint: revocation is judged again on every resumption (the acceptor checks the
//! stored chain against the policy in force), so a CRL refresh does not cost the fleet its
//! sessions.
//!
//! A ticket is `key id (16) ‖ issued at (8, big-endian Unix seconds) ‖ salt (16) ‖
//! AES-256-GCM(state) ‖ tag (16)`, the first 40 bytes authenticated as associated data.
//! Each ticket is sealed under a key of its own, HKDF-expanded from the site key and the
//! random salt, so no AES-GCM key is ever used twice and a fleet that shares one key file
//! for years at any ticket rate stays far from the 2³² messages a key with random
//! nonces allows. A ticket older than the lifetime, or issued more than five minutes in
//! the future, is refused before decryption.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use zeroize::Zeroizing;

use crate::{Error, Result};

/// The lengths of a ticket key file nginx accepts, and so do we.
pub(crate) const KEY_FILE_LENGTHS: [usize; 2] = [80, 48];

/// The longest ticket lifetime: a week, RFC 8446 §4.6.1's cap on `ticket_lifetime`.
pub const MAX_TICKET_LIFETIME: Duration = Duration::from_secs(604_800);

/// How far in the future a ticket's issue time may be (the fleet's clocks differ).
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Key id, issue time, salt: the ticket's header.
const ID_LEN: usize = 16;
const SALT_LEN: usize = 16;
const HEADER_LEN: usize = ID_LEN + 8 + SALT_LEN;
const TAG_LEN: usize = 16;

/// The ticket key files, read: each file's bytes, the encrypting one first. What a
/// [`crate::PolicySpec`] names in `session_ticket_keys`; [`crate::Policy::load`] reads
/// them with [`TicketKeys::load`].
///
/// The file bytes, and the per-site and per-ticket keys derived from them in this crate's
/// own buffers, are overwritten with zeros when dropped (`zeroize`). The HKDF and AES
/// states inside aws-lc-rs (`hkdf::Prk`, `LessSafeKey`) are that library's to wipe.
pub struct TicketKeys {
    secrets: Vec<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for TicketKeys {
    /// Never the keys: only how many.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketKeys")
            .field("keys", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

impl TicketKeys {
    /// Read `paths`, the first to encrypt. Each must be a regular file (a symbolic link
    /// to one is followed) of exactly 80 or 48 bytes, (Unix) not readable by others —
    /// whoever reads it can decrypt every recorded session it protected — and not the
    /// same key as one before it (a rotation gone wrong: the "previous" slot holding the
    /// current key, so the tickets of the real previous key no longer resume). A key
    /// readable by its group is accepted, as Kubernetes mounts secrets with `fsGroup`
    /// (0440); a caller should warn about it, as aop-origin's `--check` does.
    /// Errors: [`Error::TicketKey`], naming the file.
    pub fn load(paths: &[PathBuf]) -> Result<Self> {
        let mut secrets: Vec<Zeroizing<Vec<u8>>> = Vec::with_capacity(paths.len());
        for path in paths {
            let key = read_key(path)?;
            if let Some(j) = secrets.iter().position(|s| **s == *key) {
                return Err(Error::TicketKey {
                    path: path.clone(),
                    detail: format!(
                        "the same key as {} (listed before it): each file must hold a different key — the first the current one, the others the ones before it; a duplicate usually means a rotation step went wrong (make a new key with `openssl rand 80`, move the current one to the second place)",
                        paths[j].display()
                    ),
                });
            }
            secrets.push(key);
        }
        Ok(Self { secrets })
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The ticketer of one site: keys derived from each file's for `site` and its
    /// policy `fingerprint`; tickets live `lifetime`, a whole number of seconds from 1 to
    /// [`MAX_TICKET_LIFETIME`] ([`Error::TicketLifetime`] otherwise).
    pub(crate) fn for_site(
        &self,
        site: &str,
        fingerprint: &[u8; 32],
        lifetime: Duration,
    ) -> Result<SiteTicketer> {
        let lifetime = check_lifetime(lifetime)?;
        let keys = self
            .secrets
            .iter()
            .map(|s| SiteKey::derive(s, site, fingerprint))
            .collect::<Result<Vec<_>>>()?;
        Ok(SiteTicketer { keys, lifetime })
    }
}

/// `lifetime` in whole seconds, if 1 s to [`MAX_TICKET_LIFETIME`].
pub(crate) fn check_lifetime(lifetime: Duration) -> Result<u32> {
    let secs = lifetime.as_secs();
    if lifetime.subsec_nanos() != 0 || secs == 0 || lifetime > MAX_TICKET_LIFETIME {
        return Err(Error::TicketLifetime(lifetime));
    }
    u32::try_from(secs).map_err(|_| Error::TicketLifetime(lifetime))
}

fn read_key(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let bad = |detail: String| Error::TicketKey {
        path: path.to_owned(),
        detail,
    };
    let bytes = Zeroizing::new(aop_pki::read_file_limited(path, 4096).map_err(|e| {
        // The error names the file first; say the rest.
        let text = e.to_string();
        let prefix = format!("{}: ", path.display());
        bad(text.strip_prefix(&prefix).unwrap_or(&text).to_owned())
    })?);
    if !KEY_FILE_LENGTHS.contains(&bytes.len()) {
        return Err(bad(format!(
            "{} bytes; a session ticket key file holds exactly 80 (or 48) random bytes, as nginx's ssl_session_ticket_key: make one with `openssl rand 80 > FILE` and chmod 600 it",
            bytes.len()
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)
            .map_err(|e| bad(e.to_string()))?
            .permissions()
            .mode();
        // Group read is Kubernetes's fsGroup (0440): the caller warns. Others: refused.
        if mode & 0o007 != 0 {
            return Err(bad(format!(
                "readable by others (mode {:04o}): whoever reads it can decrypt every session it protected; run chmod 600 {} (Kubernetes: a secret volume with defaultMode 0400)",
                mode & 0o7777,
                path.display()
            )));
        }
    }
    Ok(bytes)
}

/// One file key as one site uses it: its id in tickets, and the key each ticket's own is
/// expanded from.
struct SiteKey {
    id: [u8; ID_LEN],
    prk: hkdf::Prk,
}

/// HKDF's output length, as aws-lc-rs asks for it.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl SiteKey {
    fn derive(secret: &[u8], site: &str, fingerprint: &[u8; 32]) -> Result<Self> {
        let failed = || Error::Config("session ticket key derivation failed".into());
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"aop session ticket key v1").extract(secret);
        let site_len = u64::try_from(site.len()).unwrap_or(u64::MAX).to_be_bytes();
        let info: [&[u8]; 4] = [b"aop site", &site_len, site.as_bytes(), fingerprint];
        let mut okm = Zeroizing::new([0u8; ID_LEN + 32]);
        prk.expand(&info, Len(okm.len()))
            .and_then(|o| o.fill(&mut okm[..]))
            .map_err(|_| failed())?;
        let (id, key) = okm.split_at(ID_LEN);
        let mut out = Self {
            id: [0; ID_LEN],
            prk: hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, key),
        };
        out.id.copy_from_slice(id);
        Ok(out)
    }

    /// The AES-256-GCM key of the ticket with this salt (used for that ticket only, so
    /// with a fixed nonce).
    fn ticket_key(&self, salt: &[u8]) -> Option<LessSafeKey> {
        let mut key = Zeroizing::new([0u8; 32]);
        self.prk
            .expand(&[b"aop ticket", salt], Len(key.len()))
            .and_then(|o| o.fill(&mut key[..]))
            .ok()?;
        UnboundKey::new(&AES_256_GCM, &key[..])
            .ok()
            .map(LessSafeKey::new)
    }
}

/// A site's [`rustls::server::ProducesTickets`]: encrypts with its first key, decrypts
/// with the key the ticket names.
pub(crate) struct SiteTicketer {
    keys: Vec<SiteKey>,
    lifetime: u32,
}

impl std::fmt::Debug for SiteTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteTicketer")
            .field("keys", &self.keys.len())
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl SiteTicketer {
    fn seal(&self, plain: &[u8], issued: u64) -> Option<Vec<u8>> {
        let site = self.keys.first()?;
        let mut salt = [0u8; SALT_LEN];
        aws_lc_rs::rand::fill(&mut salt).ok()?;
        let key = site.ticket_key(&salt)?;
        let mut out = Vec::with_capacity(HEADER_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&site.id);
        out.extend_from_slice(&issued.to_be_bytes());
        out.extend_from_slice(&salt);
        let mut body = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key([0; NONCE_LEN]),
            Aad::from(&out[..HEADER_LEN]),
            &mut body,
        )
        .ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    fn open(&self, ticket: &[u8], now: u64) -> Option<Vec<u8>> {
        if ticket.len() < HEADER_LEN + TAG_LEN {
            return None;
        }
        let (header, sealed) = ticket.split_at(HEADER_LEN);
        let (id, rest) = header.split_at(ID_LEN);
        let (issued, salt) = rest.split_at(8);
        let site = self.keys.iter().find(|k| k.id == id)?;
        let issued = u64::from_be_bytes(issued.try_into().ok()?);
        let fresh = issued <= now.saturating_add(CLOCK_SKEW.as_secs())
            && now.saturating_sub(issued) <= u64::from(self.lifetime);
        if !fresh {
            return None;
        }
        let key = site.ticket_key(salt)?;
        let mut body = sealed.to_vec();
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key([0; NONCE_LEN]),
                Aad::from(header),
                &mut body,
            )
            .ok()?;
        let n = plain.len();
        body.truncate(n);
        Some(body)
    }
}

impl rustls::server::ProducesTickets for SiteTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.lifetime
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal(plain, now_secs())
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open(cipher, now_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secrets: &[&[u8]]) -> TicketKeys {
        TicketKeys {
            secrets: secrets.iter().map(|s| Zeroizing::new(s.to_vec())).collect(),
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn bound_to_site_policy_and_key() {
        let (a, b) = ([1u8; 80], [2u8; 80]);
        let fp = [7u8; 32];
        let site = keys(&[&a]).for_site("api", &fp, HOUR).unwrap();
        let ticket = site.seal(b"state", 1000).unwrap();
        // The same key file, site and policy elsewhere: decrypts.
        let twin = keys(&[&a]).for_site("api", &fp, HOUR).unwrap();
        assert_eq!(twin.open(&ticket, 1000).unwrap(), b"state");
        // After rotation, the old key second: still decrypts; new tickets use the new key.
        let rotated = keys(&[&b, &a]).for_site("api", &fp, HOUR).unwrap();
        assert_eq!(rotated.open(&ticket, 1000).unwrap(), b"state");
        assert!(
            site.open(&rotated.seal(b"x", 1000).unwrap(), 1000)
                .is_none()
        );
        // Another key file, another site, another policy, the key removed: refused.
        for other in [
            keys(&[&b]).for_site("api", &fp, HOUR),
            keys(&[&a]).for_site("www", &fp, HOUR),
            keys(&[&a]).for_site("api", &[8u8; 32], HOUR),
        ] {
            assert!(other.unwrap().open(&ticket, 1000).is_none());
        }
        // Expired, from the future beyond the skew, within the skew.
        assert!(site.open(&ticket, 1000 + 3601).is_none());
        assert!(site.open(&ticket, 1000 - 301).is_none());
        assert!(site.open(&ticket, 1000 - 299).is_some());
        // Random salts: two tickets of one state differ.
        assert_ne!(site.seal(b"state", 1000), site.seal(b"state", 1000));
    }

    #[test]
    fn lifetime_is_one_second_to_a_week() {
        let k = keys(&[&[4u8; 80]]);
        for bad in [
            Duration::ZERO,
            Duration::from_millis(500),
            Duration::from_millis(1500),
            MAX_TICKET_LIFETIME + Duration::from_secs(1),
            Duration::from_secs(u64::from(u32::MAX) + 1),
        ] {
            let e = k.for_site("api", &[0; 32], bad).unwrap_err();
            assert!(
                matches!(e, Error::TicketLifetime(d) if d == bad),
                "{bad:?}: {e}"
            );
        }
        for good in [Duration::from_secs(1), HOUR, MAX_TICKET_LIFETIME] {
            let t = k.for_site("api", &[0; 32], good).unwrap();
            assert_eq!(
                u64::from(rustls::server::ProducesTickets::lifetime(&t)),
                good.as_secs()
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn load_refuses_others_and_duplicates_and_takes_group_read() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, byte: u8, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, [byte; 80]).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let (cur, prev) = (file("cur", 1, 0o600), file("prev", 2, 0o600));
        let group = file("group", 3, 0o440);
        let copy = file("copy", 1, 0o600);
        assert_eq!(
            TicketKeys::load(&[cur.clone(), prev.clone()])
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            TicketKeys::load(std::slice::from_ref(&group))
                .unwrap()
                .len(),
            1
        );
        for mode in [0o644, 0o604, 0o404] {
            let p = file("open", 5, mode);
            let e = TicketKeys::load(&[cur.clone(), p.clone()]).unwrap_err();
            assert!(
                matches!(&e, Error::TicketKey { path, detail } if *path == p && detail.starts_with("readable by others")),
                "{mode:o}: {e}"
            );
        }
        // The same file twice, or the same bytes in another file: the later one named.
        for (twice, named) in [
            (vec![cur.clone(), cur.clone()], &cur),
            (vec![cur.clone(), prev.clone(), copy.clone()], &copy),
        ] {
            let e = TicketKeys::load(&twice).unwrap_err();
            let want = format!("the same key as {} (listed before it)", cur.display());
            assert!(
                matches!(&e, Error::TicketKey { path, detail } if path == named && detail.starts_with(&want)),
                "{e}"
            );
        }
    }

    #[test]
    fn tampered_or_short_tickets_are_refused() {
        let site = keys(&[&[3u8; 48]]).for_site("api", &[0; 32], HOUR).unwrap();
        let ticket = site.seal(b"some session state", 50).unwrap();
        for i in 0..ticket.len() {
            let mut t = ticket.clone();
            t[i] ^= 0x01;
            assert!(site.open(&t, 50).is_none(), "byte {i} flipped");
        }
        for n in 0..ticket.len() {
            assert!(site.open(&ticket[..n], 50).is_none(), "cut at {n}");
        }
        assert!(site.open(&[], 50).is_none());
    }
}
