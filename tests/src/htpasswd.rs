//! htpasswd files of bcrypt entries (`user:$2y$NN$...`), as `htpasswd -B`
//! writes them, for the registry's `auth.htpasswd`.

use std::path::Path;

use crate::certs::write_atomically;

/// The bcrypt cost `htpasswd -B` uses by default.
pub const HTPASSWD_COST: u32 = 5;

/// One htpasswd line for `user` with a bcrypt (`$2y$`) hash of `password`
/// at `cost`, without the newline.
pub fn entry(user: &str, password: &str, cost: u32) -> String {
    let hash = bcrypt::hash_with_result(password, cost)
        .expect("bcrypt hash")
        .format_for_version(bcrypt::Version::TwoY);
    format!("{user}:{hash}")
}

/// Write an htpasswd file at `path` with an entry for each `(user, password)`
/// at [`HTPASSWD_COST`], replacing any file there in one rename (as a
/// Kubernetes Secret update does), so the server never reads half a file.
pub fn write(path: &Path, users: &[(&str, &str)]) {
    write_with_cost(path, users, HTPASSWD_COST);
}

/// [`write`] with bcrypt cost `cost`.
pub fn write_with_cost(path: &Path, users: &[(&str, &str)], cost: u32) {
    let text: String = users
        .iter()
        .map(|(user, password)| entry(user, password, cost) + "\n")
        .collect();
    write_atomically(path, text.as_bytes());
}
