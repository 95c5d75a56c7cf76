//! Randomness from the operating system's CSPRNG (through ring, which TLS already needs).

use ring::rand::{SecureRandom, SystemRandom};

/// Fills `bytes` with random bytes.
pub fn fill(bytes: &mut [u8]) {
    // getrandom(2) does not fail once the kernel's pool is initialised; if it ever did,
    // continuing with predictable splay or keys would be worse than stopping.
    SystemRandom::new()
        .fill(bytes)
        .expect("the system random number generator works");
}

/// A random `u64`.
pub fn u64() -> u64 {
    let mut bytes = [0u8; 8];
    fill(&mut bytes);
    u64::from_le_bytes(bytes)
}
