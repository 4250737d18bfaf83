//! Who may resume, read or forget a conversation: [`Owners`] gives every conversation the
//! server opens a secret resume token, and answers whether a request's token is that
//! conversation's. Pure logic (no actors, no warp); the routes and the WebSocket ask it.
//!
//! Tokens are 256 random bits from `rand`'s thread-local CSPRNG (ChaCha, seeded by the
//! operating system), hex-encoded, compared in constant time. They live only in this process, like the short-term windows they
//! guard: a restarted server forgets both.

use std::collections::HashMap;
use std::sync::Mutex;

use rand::RngCore;

/// Conversations the server keeps owners for; past this, the least recently used one is
/// let go (its window is closed by the caller, so no one inherits its turns).
pub const MAX_CONVERSATIONS: usize = 65_536;
/// Longest conversation name a client may choose.
pub const MAX_NAME_CHARS: usize = 128;
/// Bytes of randomness in a resume token.
const TOKEN_BYTES: usize = 32;

/// Why a conversation cannot be opened as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    #[error("conversation names are 1..={MAX_NAME_CHARS} characters")]
    BadName,
    /// The name belongs to a conversation someone else opened, and the token is not its.
    #[error("conversation `{0}` is someone else's: resume it with the token it was created with")]
    NotYours(String),
}

/// What [`Owners::open`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub session: String,
    /// The new conversation's resume token; `None` when an existing one was resumed.
    pub token: Option<String>,
    /// A conversation let go to make room: its window should be closed.
    pub evicted: Option<String>,
}

#[derive(Debug)]
struct Owner {
    /// The token as given out (hex).
    token: String,
    /// Order of last use (a counter, not a clock: ties are impossible).
    used: u64,
}

/// The owners of the server's conversations.
#[derive(Debug)]
pub struct Owners {
    cap: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    owners: HashMap<String, Owner>,
    clock: u64,
}

impl Default for Owners {
    fn default() -> Self {
        Owners::with_capacity(MAX_CONVERSATIONS)
    }
}

impl Owners {
    pub fn with_capacity(cap: usize) -> Self {
        Owners {
            cap: cap.max(1),
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the map consistent (every change is one
        // insert or remove), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a conversation for a request: with no name, a new one under a random name;
    /// with a name no one holds, a new one under that name; with a held name, that
    /// conversation when `token` is its token. New conversations get a new token.
    pub fn open(&self, name: Option<&str>, token: Option<&str>) -> Result<Opened, OwnerError> {
        let name = match name.map(str::trim) {
            None => uuid::Uuid::new_v4().to_string(),
            Some(n) if n.is_empty() || n.chars().count() > MAX_NAME_CHARS => {
                return Err(OwnerError::BadName)
            }
            Some(n) => n.to_string(),
        };
        let mut g = self.lock();
        g.clock += 1;
        let now = g.clock;
        if let Some(o) = g.owners.get_mut(&name) {
            if !token.is_some_and(|t| same(&o.token, t)) {
                return Err(OwnerError::NotYours(name));
            }
            o.used = now;
            return Ok(Opened {
                session: name,
                token: None,
                evicted: None,
            });
        }
        let evicted = if g.owners.len() >= self.cap {
            let oldest = g
                .owners
                .iter()
                .min_by_key(|(_, o)| o.used)
                .map(|(n, _)| n.clone());
            if let Some(n) = &oldest {
                g.owners.remove(n);
            }
            oldest
        } else {
            None
        };
        let mut secret = [0u8; TOKEN_BYTES];
        rand::rng().fill_bytes(&mut secret);
        let token = hex(&secret);
        g.owners.insert(
            name.clone(),
            Owner {
                token: token.clone(),
                used: now,
            },
        );
        Ok(Opened {
            session: name,
            token: Some(token),
            evicted,
        })
    }

    /// Whether `token` is the token of conversation `name` (false for unknown names).
    pub fn holds(&self, name: &str, token: Option<&str>) -> bool {
        let g = self.lock();
        match (g.owners.get(name), token) {
            (Some(o), Some(t)) => same(&o.token, t),
            _ => false,
        }
    }

    /// The conversation whose token `token` is, if any.
    pub fn conversation_of(&self, token: &str) -> Option<String> {
        let g = self.lock();
        // Every entry is compared, so the time taken does not say where a match was.
        let mut found = None;
        for (name, o) in &g.owners {
            if same(&o.token, token) {
                found = Some(name.clone());
            }
        }
        found
    }

    /// Lets a conversation go (it was forgotten): its name may be opened anew.
    pub fn release(&self, name: &str) {
        self.lock().owners.remove(name);
    }

    pub fn len(&self) -> usize {
        self.lock().owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `given` is the token `expected`, in time that depends only on the lengths.
fn same(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_conversation_gets_a_token_that_resumes_it_and_nothing_else_does() {
        let o = Owners::default();
        let a = o.open(None, None).unwrap();
        let token = a.token.clone().unwrap();
        assert_eq!(token.len(), 2 * TOKEN_BYTES);
        let again = o.open(Some(&a.session), Some(&token)).unwrap();
        assert_eq!(
            (again.session.as_str(), again.token),
            (a.session.as_str(), None)
        );
        assert_eq!(
            o.open(Some(&a.session), None),
            Err(OwnerError::NotYours(a.session.clone()))
        );
        let b = o.open(None, None).unwrap();
        assert!(o.open(Some(&a.session), b.token.as_deref()).is_err());
        assert!(o.holds(&a.session, Some(&token)));
        assert!(!o.holds(&a.session, b.token.as_deref()));
        assert!(!o.holds("unknown", Some(&token)));
        assert_eq!(o.conversation_of(&token), Some(a.session));
    }

    #[test]
    fn a_thousand_random_tokens_open_no_conversation() {
        let o = Owners::default();
        let a = o.open(Some("mine"), None).unwrap();
        let mut secret = [0u8; TOKEN_BYTES];
        for _ in 0..1000 {
            rand::rng().fill_bytes(&mut secret);
            let guess = hex(&secret);
            assert!(o.open(Some("mine"), Some(&guess)).is_err());
            assert!(!o.holds("mine", Some(&guess)));
            assert_eq!(o.conversation_of(&guess), None);
        }
        // Near misses too: the right length, one character off.
        let t = a.token.unwrap();
        let mut off = t.clone().into_bytes();
        off[10] = if off[10] == b'0' { b'1' } else { b'0' };
        assert!(!o.holds("mine", Some(std::str::from_utf8(&off).unwrap())));
        assert!(!o.holds("mine", Some(&t[..t.len() - 1])));
    }

    #[test]
    fn a_chosen_free_name_is_claimed_and_bad_names_are_refused() {
        let o = Owners::default();
        let a = o.open(Some("  notes "), None).unwrap();
        assert_eq!(a.session, "notes");
        assert!(a.token.is_some());
        assert_eq!(o.open(Some(""), None), Err(OwnerError::BadName));
        assert_eq!(
            o.open(Some(&"x".repeat(MAX_NAME_CHARS + 1)), None),
            Err(OwnerError::BadName)
        );
    }

    #[test]
    fn past_capacity_the_least_recently_used_conversation_is_let_go() {
        let o = Owners::with_capacity(2);
        let a = o.open(Some("a"), None).unwrap();
        o.open(Some("b"), None).unwrap();
        // "a" is used again, so "b" is now the oldest.
        o.open(Some("a"), a.token.as_deref()).unwrap();
        let c = o.open(Some("c"), None).unwrap();
        assert_eq!(c.evicted.as_deref(), Some("b"));
        assert_eq!(o.len(), 2);
        // A released name can be opened by anyone, with a new token.
        o.release("a");
        let again = o.open(Some("a"), None).unwrap();
        assert_ne!(again.token, a.token);
    }
}
