use std::path::PathBuf;

/// A cryptographic operation failed. Messages never contain key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the system random number generator failed")]
    Random,
    #[error("the ciphertext is malformed")]
    Malformed,
    /// Wrong key, wrong place (AAD) or tampered bytes: deliberately indistinguishable.
    #[error("the ciphertext does not authenticate under this key and binding")]
    Decrypt,
    #[error("root key version {0} is not loaded")]
    UnknownKeyVersion(u32),
}

/// A root-key provider could not load, create or rotate keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyProviderError {
    #[error("cannot access the root key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the root key file {path} is accessible by other users (mode {mode:o}); run `chmod 600` on it"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("the root key material is invalid: {0}")]
    Parse(String),
    #[error("a root key already exists at {0}; refusing to overwrite it")]
    Exists(PathBuf),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}
