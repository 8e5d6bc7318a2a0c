//! A tenant (or the catalog) as the engine holds it, and how it is loaded:
//! its row in the `ledger` view plus its events in the log after that row,
//! never by replaying its whole history.

use std::collections::HashMap;

use events::CATALOG_TENANT;
use projections::domain::{
    CatalogState, Fact, FileEntry, KeyEntry, RequestEntry, Spill, Spills, TenantState,
};
use projections::{LedgerView, Projection, ViewStore};

use crate::log::EventLog;

/// A tenant (or the catalog) as the engine holds it.
#[derive(Default)]
pub(super) struct Loaded {
    pub(super) state: TenantState,
    pub(super) catalog: CatalogState,
    /// Accepted token requests the view may not have yet.
    pub(super) recent_requests: HashMap<String, RequestEntry>,
    /// Files stored (`Some`) or deleted (`None`) since loading: the view may
    /// not have them yet.
    pub(super) recent_files: HashMap<String, Option<FileEntry>>,
    /// Accepted commands' idempotency keys the view may not have yet.
    pub(super) recent_keys: HashMap<String, KeyEntry>,
    /// The last position on the tenant's subjects, including messages that
    /// did not decode (they count for the log's expected-sequence check).
    pub(super) log_position: u64,
    /// When the engine last decided for this tenant (its own clock of
    /// decisions): the tenant cache evicts the least recently used.
    pub(super) used: u64,
    /// The view row it was loaded from holds request keys (or files): a key
    /// missing from memory must then be looked up in the view. Without
    /// any, memory has them all (they come from the events after the row),
    /// and a miss is an answer.
    pub(super) view_requests: bool,
    pub(super) view_files: bool,
    pub(super) view_keys: bool,
}

/// The maps a fold's spills go to: requests, files and command keys the
/// views may not have yet (a loaded tenant's, or a group's overlay).
struct Recent<'a> {
    requests: &'a mut HashMap<String, RequestEntry>,
    files: &'a mut HashMap<String, Option<FileEntry>>,
    keys: &'a mut HashMap<String, KeyEntry>,
}

impl Recent<'_> {
    fn keep(&mut self, spills: Spills) {
        for spill in spills {
            match spill {
                Spill::Request { request, entry } => {
                    self.requests.insert(request, entry);
                }
                Spill::File { file, entry } => {
                    self.files.insert(file, entry);
                }
                Spill::Key { key, entry } => {
                    self.keys.insert(key, entry);
                }
                Spill::Invoice { .. } => {}
            }
        }
    }
}

impl Loaded {
    pub(super) fn hash(&self, catalog: bool) -> [u8; 32] {
        if catalog {
            self.catalog.chain.last_hash
        } else {
            self.state.chain.last_hash
        }
    }

    /// Folds an event, or skips it when it breaks the hash chain (the one
    /// chain-checked fold the views use too, so memory and views agree).
    pub(super) fn fold(&mut self, catalog: bool, fact: &Fact<'_>) {
        self.log_position = fact.position;
        let folded =
            if catalog { self.catalog.fold(fact).map(|()| Spills::default()) } else { self.state.fold(fact) };
        match folded {
            Err(error) => tracing::warn!(%error, "skipping an event"),
            Ok(spills) => Recent {
                requests: &mut self.recent_requests,
                files: &mut self.recent_files,
                keys: &mut self.recent_keys,
            }
            .keep(spills),
        }
    }

    /// Requests, files and command keys held beside the state.
    pub(super) fn recent_len(&self) -> usize {
        self.recent_requests.len() + self.recent_files.len() + self.recent_keys.len()
    }
}

/// Loads a tenant (or the catalog) from its view row plus the log after it.
pub(super) async fn load<L: EventLog>(log: &L, views: &ViewStore, tenant: &str) -> anyhow::Result<Loaded> {
    let catalog = tenant == CATALOG_TENANT;
    // The checkpoint is read before the row, so the row covers at least
    // everything up to it: no event of this tenant lies between the two.
    // Both from one store: a reopening in between could pair a newer
    // checkpoint with an older row, and events would be skipped.
    let generation = views.generation();
    let checkpoint = views.checkpoint_in(LedgerView::NAME, log.partition_of(tenant))?;
    let mut loaded = Loaded::default();
    if catalog {
        loaded.catalog = LedgerView::catalog(&views)?;
        loaded.log_position = loaded.catalog.chain.last_position;
    } else if let Some(row) = LedgerView::tenant_with_keys(&views, tenant)? {
        loaded.log_position = row.state.chain.last_position;
        loaded.state = row.state;
        loaded.view_requests = row.has_requests;
        loaded.view_files = row.has_files;
        loaded.view_keys = row.has_keys;
    }
    anyhow::ensure!(views.generation() == generation, "the views were reopened while loading {tenant}");
    let tenant_head = log.tenant_head(tenant).await?;
    let start = loaded.log_position.max(checkpoint) + 1;
    if tenant_head >= start {
        for record in log.read_tenant(tenant, start, tenant_head).await? {
            let decoded = record.decode();
            match &decoded.event {
                Ok(envelope) => {
                    loaded.fold(catalog, &Fact { position: record.position, hash: decoded.hash, envelope })
                }
                Err(error) => {
                    tracing::warn!(tenant, position = record.position, %error, "skipping undecodable event");
                    loaded.log_position = record.position;
                }
            }
        }
    }
    // Everything of the tenant's up to its head is folded (or skipped as
    // undecodable): the head is what the next append must expect.
    loaded.log_position = tenant_head;
    Ok(loaded)
}

/// What a tenant's commands staged earlier in a group leave behind: the
/// state its next command in the same group is decided against (chained
/// decisions). Built from the tenant's memory plus the staged events, with
/// provisional positions that never reach the log or an answer: a chained
/// command whose answer would append nothing waits for the next group.
pub(super) struct Overlay {
    pub(super) state: TenantState,
    pub(super) requests: HashMap<String, RequestEntry>,
    pub(super) files: HashMap<String, Option<FileEntry>>,
    pub(super) keys: HashMap<String, KeyEntry>,
}

impl Overlay {
    pub(super) fn new(base: &TenantState) -> Overlay {
        Overlay { state: base.clone(), requests: HashMap::new(), files: HashMap::new(), keys: HashMap::new() }
    }

    /// Folds staged events (the hashes are real: the chain continues).
    pub(super) fn fold<'e>(&mut self, staged: impl IntoIterator<Item = &'e (events::Envelope, [u8; 32])>) {
        for (envelope, hash) in staged {
            let position = self.state.chain.last_position + 1;
            match self.state.fold(&Fact { position, hash: *hash, envelope }) {
                Ok(spills) => {
                    Recent { requests: &mut self.requests, files: &mut self.files, keys: &mut self.keys }
                        .keep(spills)
                }
                // Staged events chain by construction.
                Err(error) => tracing::error!(%error, "a staged event does not chain"),
            }
        }
    }
}
