//! Listing one project's repositories from the catalog (the management API's listing
//! and retention's walk of a project).

use berth_core::Error;
use berth_core::access::DEFAULT_PROJECT;

use crate::MetadataStore;

/// The names of `project`'s repositories after `last`, sorted: at least `n + 1` if there
/// are that many (more may follow the `n + 1`th), so a caller knows whether another page follows.
pub async fn project_repositories(
    meta: &dyn MetadataStore,
    project: &str,
    last: Option<String>,
    n: u32,
) -> Result<Vec<String>, Error> {
    // The catalog is sorted bytewise, so `project/…` names are one run of it, starting
    // after `project/`; the default project also holds every one-component name, which
    // are spread over the whole catalog.
    let prefix = format!("{project}/");
    let everywhere = project == DEFAULT_PROJECT;
    let mut last = match last {
        Some(last) if everywhere || last > prefix => last,
        _ if everywhere => String::new(),
        _ => prefix.clone(),
    };
    let mut names = Vec::new();
    'scan: loop {
        let batch = meta.catalog(Some(&last), n + 1).await?;
        for name in &batch.items {
            if name.starts_with(&prefix) || (everywhere && !name.contains('/')) {
                names.push(name.clone());
            } else if !everywhere {
                break 'scan;
            }
        }
        match batch.items.last() {
            Some(name) if batch.more && names.len() <= n as usize => last = name.clone(),
            _ => break,
        }
    }
    Ok(names)
}
