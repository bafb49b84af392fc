//! Names with an operation in flight: a second operation on a claimed name fails at once
//! instead of after minutes of work. Used by image pulls and kernel imports and pulls; the
//! store's UNIQUE constraint stays the final arbiter.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::error::OpError;

pub struct NameClaims {
    names: Mutex<HashSet<String>>,
    /// The message for a name already claimed (what is happening to it, what to do).
    busy: fn(&str) -> String,
}

/// A claimed name, released on drop.
pub struct NameClaim<'a> {
    claims: &'a NameClaims,
    name: String,
}

impl NameClaims {
    pub fn new(busy: fn(&str) -> String) -> NameClaims {
        NameClaims {
            names: Mutex::new(HashSet::new()),
            busy,
        }
    }

    /// Claims `name`, or says why it is busy (`AlreadyExists`).
    pub fn claim(&self, name: &str) -> Result<NameClaim<'_>, OpError> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if !names.insert(name.to_string()) {
            return Err(OpError::AlreadyExists((self.busy)(name)));
        }
        Ok(NameClaim {
            claims: self,
            name: name.to_string(),
        })
    }
}

impl Drop for NameClaim<'_> {
    fn drop(&mut self) {
        let mut names = self.claims.names.lock().unwrap_or_else(|e| e.into_inner());
        names.remove(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_free_again_once_its_claim_is_dropped() {
        let claims = NameClaims::new(|n| format!("{n} is busy"));
        let first = claims.claim("a").expect("claim");
        let _other = claims.claim("b").expect("another name");
        match claims.claim("a") {
            Err(OpError::AlreadyExists(m)) => assert_eq!(m, "a is busy"),
            _ => panic!("a second claim of a name must fail"),
        }
        drop(first);
        claims.claim("a").expect("claim after release");
    }
}
