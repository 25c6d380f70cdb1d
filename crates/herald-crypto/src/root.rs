//! Versioned root keys (key-encryption keys) and the providers that hold them.
//!
//! A root key never encrypts data. It wraps data keys (one per subject, one for the system), so
//! rotating it re-wraps a few hundred bytes per subject instead of re-encrypting everything, and
//! an old version stays loaded (decrypt-only) until nothing is wrapped under it any more.
//!
//! Text format, shared by the key file and the `HERALD_KEYS__ROOT_KEY` variable: entries
//! `<version>:<base64 of 32 bytes>` separated by whitespace, newlines or commas; `#` starts a
//! comment. The highest version is the active one.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use data_encoding::BASE64;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::aead::{self, Binding, KEY_LEN, SymmetricKey};
use crate::{CryptoError, KeyProviderError};

/// Every loaded root-key version. The highest wraps; all of them unwrap.
#[derive(Clone)]
pub struct RootKeyRing {
    keys: BTreeMap<u32, SymmetricKey>,
}

impl fmt::Debug for RootKeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootKeyRing")
            .field("versions", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl RootKeyRing {
    /// A ring holding one fresh random key, version 1.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut keys = BTreeMap::new();
        keys.insert(1, SymmetricKey::generate()?);
        Ok(Self { keys })
    }

    /// A ring with one more version, fresh and random, which becomes the active one.
    pub fn with_new_version(&self) -> Result<Self, CryptoError> {
        let mut keys = self.keys.clone();
        keys.insert(
            self.active_version().saturating_add(1),
            SymmetricKey::generate()?,
        );
        Ok(Self { keys })
    }

    /// The version new data keys are wrapped under.
    pub fn active_version(&self) -> u32 {
        self.keys.keys().next_back().copied().unwrap_or(0)
    }

    pub fn versions(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.keys().copied()
    }

    /// Wraps a data key under the active root key, bound to where the wrapped key is stored.
    pub fn wrap(&self, data_key: &SymmetricKey, at: &Binding<'_>) -> Result<Vec<u8>, CryptoError> {
        let version = self.active_version();
        let root = self
            .keys
            .get(&version)
            .ok_or(CryptoError::UnknownKeyVersion(version))?;
        aead::seal(root, version, at, data_key.expose())
    }

    /// Unwraps a data key wrapped by [`RootKeyRing::wrap`] under any loaded version.
    pub fn unwrap_key(
        &self,
        wrapped: &[u8],
        at: &Binding<'_>,
    ) -> Result<SymmetricKey, CryptoError> {
        let version = aead::key_version(wrapped)?;
        let root = self
            .keys
            .get(&version)
            .ok_or(CryptoError::UnknownKeyVersion(version))?;
        let bytes = aead::open(root, at, wrapped)?;
        SymmetricKey::from_slice(&bytes).ok_or(CryptoError::Malformed)
    }

    /// Parses the text format. Errors name the entry, never its key material.
    pub fn parse(text: &str) -> Result<Self, KeyProviderError> {
        let mut keys = BTreeMap::new();
        let entries = text
            .lines()
            .map(|line| line.split('#').next().unwrap_or(""))
            .flat_map(|line| line.split(|c: char| c == ',' || c.is_whitespace()))
            .filter(|entry| !entry.is_empty());
        for (index, entry) in entries.enumerate() {
            let position = index + 1;
            let (version, material) = entry.split_once(':').ok_or_else(|| {
                KeyProviderError::Parse(format!("entry {position} is not <version>:<base64 key>"))
            })?;
            let version: u32 = version.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
                KeyProviderError::Parse(format!(
                    "entry {position} has no valid version (a positive integer)"
                ))
            })?;
            let decoded = Zeroizing::new(BASE64.decode(material.as_bytes()).map_err(|_| {
                KeyProviderError::Parse(format!("root key version {version} is not valid base64"))
            })?);
            let key = SymmetricKey::from_slice(&decoded).ok_or_else(|| {
                KeyProviderError::Parse(format!(
                    "root key version {version} is not {KEY_LEN} bytes long"
                ))
            })?;
            if keys.insert(version, key).is_some() {
                return Err(KeyProviderError::Parse(format!(
                    "root key version {version} appears twice"
                )));
            }
        }
        if keys.is_empty() {
            return Err(KeyProviderError::Parse("no root key found".into()));
        }
        Ok(Self { keys })
    }

    /// The text format, one version per line. The returned string holds key material.
    pub fn encode(&self) -> Zeroizing<String> {
        // Sized up front so the string never reallocates (and leaves key copies behind).
        let mut out = Zeroizing::new(String::with_capacity(self.keys.len() * 64));
        for (version, key) in &self.keys {
            out.push_str(&version.to_string());
            out.push(':');
            BASE64.encode_append(key.expose(), &mut out);
            out.push('\n');
        }
        out
    }
}

/// Where root keys live. `file` is the default; `env` suits containers and secret managers.
pub trait RootKeyProvider: Send + Sync + fmt::Debug {
    /// The key ring, or `None` when no root key exists yet (a first start).
    fn load(&self) -> Result<Option<RootKeyRing>, KeyProviderError>;
    /// Creates the first root key. Refuses when one already exists.
    fn create(&self) -> Result<RootKeyRing, KeyProviderError>;
    /// Makes a new root-key version the active one and returns the whole ring.
    fn rotate(&self) -> Result<RootKeyRing, KeyProviderError>;
    /// Where the keys are, for operators' messages ("file ./herald-data/root.key").
    fn describe(&self) -> String;
}

/// Root keys in a file readable only by its owner (0600).
#[derive(Debug, Clone)]
pub struct FileKeyProvider {
    path: PathBuf,
}

const FILE_HEADER: &str = "# Herald root keys: <version>:<base64>, the highest version is active.\n\
# Keep this file secret, and back it up separately from the database: losing it makes every\n\
# encrypted value unreadable; storing it next to a database backup defeats the encryption.\n";

impl FileKeyProvider {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the key file to `to` (which must not exist): the ring is written there, read back
    /// and compared, and only then is the old file removed. Returns the provider at `to`.
    pub fn move_to(&self, to: &Path) -> Result<FileKeyProvider, KeyProviderError> {
        let ring = self.load()?.ok_or_else(|| {
            self.io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no root key file to move",
            ))
        })?;
        let target = FileKeyProvider::new(to);
        target.write(&ring, false)?;
        let written = target.load()?;
        if written.as_ref().map(|r| r.encode()) != Some(ring.encode()) {
            return Err(target.io(std::io::Error::other(
                "the moved key file does not read back the same keys",
            )));
        }
        std::fs::remove_file(&self.path).map_err(|e| self.io(e))?;
        Ok(target)
    }

    fn io(&self, source: std::io::Error) -> KeyProviderError {
        KeyProviderError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes the ring to a new owner-only file next to the target, fsyncs it and moves it
    /// into place, so a crash leaves either the old file or the new one, never half of one.
    fn write(&self, ring: &RootKeyRing, replace: bool) -> Result<(), KeyProviderError> {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let file_name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root.key".into());
        // The key directory is created owner-only: it holds nothing but keys.
        if !dir.exists() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                builder.mode(0o700);
            }
            builder.create(dir).map_err(|e| self.io(e))?;
        }
        let suffix = data_encoding::HEXLOWER.encode(&crate::random::bytes::<6>()?);
        let temp = dir.join(format!(".{file_name}.{suffix}.tmp"));
        let result = (|| {
            let mut file = owner_only_new_file(&temp)?;
            file.write_all(FILE_HEADER.as_bytes())?;
            file.write_all(ring.encode().as_bytes())?;
            file.sync_all()?;
            if replace {
                std::fs::rename(&temp, &self.path)?;
            } else {
                // hard_link fails if the target exists: two first starts cannot both win.
                std::fs::hard_link(&temp, &self.path)?;
                std::fs::remove_file(&temp)?;
            }
            std::fs::File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result.map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyProviderError::Exists(self.path.clone())
            } else {
                self.io(source)
            }
        })
    }
}

#[cfg(unix)]
fn owner_only_new_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn owner_only_new_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(unix)]
fn check_owner_only(path: &Path, metadata: &std::fs::Metadata) -> Result<(), KeyProviderError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyProviderError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owner_only(_: &Path, _: &std::fs::Metadata) -> Result<(), KeyProviderError> {
    Ok(())
}

impl RootKeyProvider for FileKeyProvider {
    fn load(&self) -> Result<Option<RootKeyRing>, KeyProviderError> {
        let metadata = match std::fs::metadata(&self.path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        // Fail closed: a key file others can read is a leaked key, not a configuration detail.
        check_owner_only(&self.path, &metadata)?;
        let text = Zeroizing::new(std::fs::read_to_string(&self.path).map_err(|e| self.io(e))?);
        RootKeyRing::parse(&text).map(Some)
    }

    fn create(&self) -> Result<RootKeyRing, KeyProviderError> {
        let ring = RootKeyRing::generate()?;
        self.write(&ring, false)?;
        Ok(ring)
    }

    fn rotate(&self) -> Result<RootKeyRing, KeyProviderError> {
        let current = self.load()?.ok_or_else(|| {
            self.io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no root key file to rotate",
            ))
        })?;
        let next = current.with_new_version()?;
        self.write(&next, true)?;
        Ok(next)
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}

/// Root keys handed in through the environment (`HERALD_KEYS__ROOT_KEY` or `…_FILE`).
/// Herald cannot write the environment, so creation and rotation are the operator's steps.
pub struct EnvKeyProvider {
    value: Option<SecretString>,
    variable: &'static str,
}

impl fmt::Debug for EnvKeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvKeyProvider")
            .field("variable", &self.variable)
            .field("set", &self.value.is_some())
            .finish()
    }
}

impl EnvKeyProvider {
    pub fn new(value: Option<SecretString>, variable: &'static str) -> Self {
        Self { value, variable }
    }
}

impl RootKeyProvider for EnvKeyProvider {
    fn load(&self) -> Result<Option<RootKeyRing>, KeyProviderError> {
        match &self.value {
            None => Ok(None),
            Some(value) => RootKeyRing::parse(value.expose_secret()).map(Some),
        }
    }

    fn create(&self) -> Result<RootKeyRing, KeyProviderError> {
        Err(KeyProviderError::Unsupported(
            "the env key provider cannot create a root key: generate one with \
             `herald keys generate-root` and pass it in the configured variable",
        ))
    }

    fn rotate(&self) -> Result<RootKeyRing, KeyProviderError> {
        // Rotation with the env provider: the operator adds a higher version to the variable
        // and restarts every node; `rotate-root` then re-wraps what is still under older ones.
        self.load()?.ok_or(KeyProviderError::Unsupported(
            "the env key provider has no root key to rotate",
        ))
    }

    fn describe(&self) -> String {
        format!("environment variable {}", self.variable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Binding<'static> {
        Binding::new("subject_keys", "wrapped_key", "sub_x")
    }

    #[test]
    fn wraps_under_active_and_unwraps_under_any_loaded_version() {
        let v1 = RootKeyRing::generate().unwrap();
        let dek = SymmetricKey::generate().unwrap();
        let wrapped_v1 = v1.wrap(&dek, &at()).unwrap();
        let v2 = v1.with_new_version().unwrap();
        assert_eq!(v2.active_version(), 2);
        let wrapped_v2 = v2.wrap(&dek, &at()).unwrap();
        assert_eq!(aead::key_version(&wrapped_v2).unwrap(), 2);
        assert_eq!(v2.unwrap_key(&wrapped_v1, &at()).unwrap(), dek);
        assert_eq!(v2.unwrap_key(&wrapped_v2, &at()).unwrap(), dek);
        assert!(matches!(
            v1.unwrap_key(&wrapped_v2, &at()),
            Err(CryptoError::UnknownKeyVersion(2))
        ));
    }

    #[test]
    fn a_different_root_key_cannot_unwrap() {
        let dek = SymmetricKey::generate().unwrap();
        let wrapped = RootKeyRing::generate().unwrap().wrap(&dek, &at()).unwrap();
        let stranger = RootKeyRing::generate().unwrap();
        assert!(matches!(
            stranger.unwrap_key(&wrapped, &at()),
            Err(CryptoError::Decrypt)
        ));
    }

    #[test]
    fn text_format_round_trips() {
        let ring = RootKeyRing::generate().unwrap().with_new_version().unwrap();
        let parsed = RootKeyRing::parse(&ring.encode()).unwrap();
        assert_eq!(parsed.versions().collect::<Vec<_>>(), vec![1, 2]);
        let dek = SymmetricKey::generate().unwrap();
        let wrapped = ring.wrap(&dek, &at()).unwrap();
        assert_eq!(parsed.unwrap_key(&wrapped, &at()).unwrap(), dek);
    }

    #[test]
    fn parse_accepts_commas_and_comments() {
        let key = BASE64.encode(&[1u8; 32]);
        let text = format!("# comment\n1:{key}, 3:{key} # trailing\n");
        let ring = RootKeyRing::parse(&text).unwrap();
        assert_eq!(ring.active_version(), 3);
    }

    #[test]
    fn parse_rejects_bad_material_without_echoing_it() {
        let short = BASE64.encode(&[9u8; 16]);
        for (text, expected) in [
            ("", "no root key"),
            ("nonsense", "entry 1"),
            ("0:AAAA", "entry 1"),
            ("x:AAAA", "entry 1"),
            ("1:***", "not valid base64"),
            (&format!("1:{short}") as &str, "not 32 bytes"),
        ] {
            let err = RootKeyRing::parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?} gave {err}");
            if text.len() > 8 {
                assert!(
                    !err.contains(&text[2..]),
                    "error echoes key material: {err}"
                );
            }
        }
        let key = BASE64.encode(&[1u8; 32]);
        let dup = RootKeyRing::parse(&format!("1:{key} 1:{key}")).unwrap_err();
        assert!(dup.to_string().contains("appears twice"));
    }

    #[test]
    fn file_provider_creates_owner_only_file_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let provider = FileKeyProvider::new(dir.path().join("root.key"));
        assert!(provider.load().unwrap().is_none());
        let created = provider.create().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(provider.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let loaded = provider.load().unwrap().unwrap();
        assert_eq!(loaded.encode(), created.encode());
        assert!(matches!(
            provider.create(),
            Err(KeyProviderError::Exists(_))
        ));
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn file_provider_rotation_keeps_old_versions() {
        let dir = tempfile::tempdir().unwrap();
        let provider = FileKeyProvider::new(dir.path().join("root.key"));
        let first = provider.create().unwrap();
        let rotated = provider.rotate().unwrap();
        assert_eq!(rotated.versions().collect::<Vec<_>>(), vec![1, 2]);
        let reloaded = provider.load().unwrap().unwrap();
        assert_eq!(reloaded.encode(), rotated.encode());
        let dek = SymmetricKey::generate().unwrap();
        let old = first.wrap(&dek, &at()).unwrap();
        assert_eq!(reloaded.unwrap_key(&old, &at()).unwrap(), dek);
    }

    #[cfg(unix)]
    #[test]
    fn file_provider_refuses_a_world_readable_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let provider = FileKeyProvider::new(dir.path().join("root.key"));
        provider.create().unwrap();
        std::fs::set_permissions(provider.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            provider.load(),
            Err(KeyProviderError::Permissions { mode: 0o644, .. })
        ));
    }

    #[test]
    fn env_provider_loads_but_never_creates() {
        let text = RootKeyRing::generate().unwrap().encode();
        let provider = EnvKeyProvider::new(Some(SecretString::from(text.as_str())), "HERALD_X");
        assert_eq!(provider.load().unwrap().unwrap().active_version(), 1);
        assert!(matches!(
            provider.create(),
            Err(KeyProviderError::Unsupported(_))
        ));
        assert!(!format!("{provider:?}").contains(&text[2..]));
        let empty = EnvKeyProvider::new(None, "HERALD_X");
        assert!(empty.load().unwrap().is_none());
    }
}
