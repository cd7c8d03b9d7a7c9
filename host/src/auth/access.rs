//! Permissions: what a caller may do in its project.
//!
//! A grant gives a principal (a user, or every member of the organization
//! holding a role) an action on one kind of resource, for one object by name
//! or for all (`*`). Actions nest: Admin ⊇ Write ⊇ Read. The project's
//! creator and the organization's owners and admins hold Admin on every
//! kind. The host loads a caller's grants with its session check (one query,
//! cached with the session) and answers the `session` capability's `check`
//! from memory; route groups ask before they act.

use crate::caps::zatabase::platform::session::{Action, Permission, Resource};

include!("../../../wit/access-names.rs");

fn rank(action: Action) -> u8 {
    match action {
        Action::Read => 1,
        Action::Write => 2,
        Action::Admin => 3,
    }
}

/// The message of a denial, exactly as the API answers it.
pub fn denial(resource: Resource, action: Action) -> String {
    format!(
        "Insufficient permissions: requires {} on {}",
        action_name(action),
        resource_name(resource)
    )
}

/// A caller's effective permissions: at most one entry per (kind, object),
/// holding the highest action granted.
#[derive(Debug, Clone, Default)]
pub struct Access {
    permissions: Vec<Permission>,
}

impl Access {
    /// No permissions (an anonymous caller).
    pub fn none() -> Self {
        Self::default()
    }

    /// Admin on every kind of resource.
    pub fn admin() -> Self {
        let mut access = Self::none();
        for resource in RESOURCES {
            access.add(resource, "*", Action::Admin);
        }
        access
    }

    /// `admin` for the project's administrators, else the merge of the
    /// grants, each `(resource, resource id, actions)` as stored. Names the
    /// host does not know (none pass the table's checks) are skipped.
    pub fn from_grants(admin: bool, grants: &[(String, String, Vec<String>)]) -> Self {
        if admin {
            return Self::admin();
        }
        // Merged through an index: a linear search for each grant made a
        // caller with many grants cost the square of their number.
        let mut access = Self::none();
        let mut index: std::collections::HashMap<(u8, &str), usize> = Default::default();
        for (resource, id, actions) in grants {
            let Some(resource) = parse_resource(resource) else {
                tracing::warn!(resource, "ignoring a grant on an unknown resource");
                continue;
            };
            let Some(action) = actions
                .iter()
                .filter_map(|a| parse_action(a))
                .max_by_key(|a| rank(*a))
            else {
                continue;
            };
            match index.entry((resource as u8, id.as_str())) {
                std::collections::hash_map::Entry::Occupied(at) => {
                    let held = &mut access.permissions[*at.get()];
                    if rank(held.action) < rank(action) {
                        held.action = action;
                    }
                }
                std::collections::hash_map::Entry::Vacant(at) => {
                    at.insert(access.permissions.len());
                    access.permissions.push(Permission {
                        resource,
                        resource_id: id.clone(),
                        action,
                    });
                }
            }
        }
        access
    }

    fn add(&mut self, resource: Resource, id: &str, action: Action) {
        match self
            .permissions
            .iter_mut()
            .find(|p| p.resource == resource && p.resource_id == id)
        {
            Some(held) if rank(held.action) >= rank(action) => {}
            Some(held) => held.action = action,
            None => self.permissions.push(Permission {
                resource,
                resource_id: id.to_owned(),
                action,
            }),
        }
    }

    /// Whether `action` on `resource` is allowed: on the object `id`, or
    /// with none, on every object of the kind (which takes a `*` grant).
    pub fn allows(&self, resource: Resource, id: Option<&str>, action: Action) -> bool {
        self.permissions.iter().any(|p| {
            p.resource == resource
                && rank(p.action) >= rank(action)
                && (p.resource_id == "*" || Some(p.resource_id.as_str()) == id)
        })
    }

    /// `allows`, as the `session` capability answers it.
    pub fn check(
        &self,
        resource: Resource,
        id: Option<&str>,
        action: Action,
    ) -> Result<(), String> {
        if self.allows(resource, id, action) {
            Ok(())
        } else {
            Err(denial(resource, action))
        }
    }

    /// Whether `action` is held through `grant`: on every object of its
    /// kind, or on at least one when the grant reaches any object.
    pub fn holds(&self, grant: SqlGrant, action: Action) -> bool {
        if grant.every_object {
            return self.allows(grant.resource, None, action);
        }
        self.permissions
            .iter()
            .any(|p| p.resource == grant.resource && rank(p.action) >= rank(action))
    }

    /// Whether a route group reaching the tenant's SQL through `grants` may
    /// run SQL for this caller, and if so whether only reading: Read through
    /// one of them is needed, Write through one makes the transaction
    /// read-write. The error is the denial of the first.
    pub fn sql_mode(&self, grants: &[SqlGrant]) -> Result<ReadOnly, String> {
        let through = |action| grants.iter().any(|g| self.holds(*g, action));
        if !through(Action::Read) {
            let resource = grants.first().map_or(Resource::Tables, |g| g.resource);
            return Err(denial(resource, Action::Read));
        }
        Ok(ReadOnly(!through(Action::Write)))
    }

    /// The kind of resource a write refused by a read-only transaction
    /// lacks Write on: the first of `grants` the caller reads through (a
    /// reader of one table's vectors lacks Write on Vectors, not on the
    /// Collections named before them).
    pub fn written(&self, grants: &[SqlGrant]) -> Resource {
        grants
            .iter()
            .find(|g| self.holds(**g, Action::Read))
            .or(grants.first())
            .map_or(Resource::Tables, |g| g.resource)
    }

    pub fn permissions(&self) -> &[Permission] {
        &self.permissions
    }
}

/// Whether SQL runs in a read-only transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOnly(pub bool);

/// A kind of grant through which a route group reaches the caller's tenant
/// with SQL (the manifest's `sql_grants`): `Tables/*` is a grant on every
/// table, `Collections` a grant on any one collection, the guest checking
/// which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlGrant {
    pub resource: Resource,
    /// Only a grant on every object (`*`) counts.
    pub every_object: bool,
}

impl SqlGrant {
    /// Every table: what `/v1/sql`'s arbitrary SQL and a user's function
    /// (Admin in its own tenant) reach.
    pub const EVERY_TABLE: Self = Self {
        resource: Resource::Tables,
        every_object: true,
    };
}

impl std::str::FromStr for SqlGrant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, every_object) = match s.strip_suffix("/*") {
            Some(name) => (name, true),
            None => (s, false),
        };
        let resource = parse_resource(name).ok_or_else(|| {
            let names: Vec<_> = RESOURCES.into_iter().map(resource_name).collect();
            format!(
                "`{s}` is not a resource kind, optionally followed by `/*` (one of {})",
                names.join(", ")
            )
        })?;
        Ok(Self {
            resource,
            every_object,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(resource: &str, id: &str, actions: &[&str]) -> (String, String, Vec<String>) {
        (
            resource.to_owned(),
            id.to_owned(),
            actions.iter().map(|a| (*a).to_owned()).collect(),
        )
    }

    #[test]
    fn actions_nest_and_objects_narrow() {
        let access = Access::from_grants(
            false,
            &[
                grant("Tables", "*", &["Read"]),
                grant("Functions", "hello", &["Write"]),
                grant("Functions", "hello", &["Read"]),
                grant("Nonsense", "*", &["Admin"]),
                grant("Collections", "*", &["Bogus"]),
            ],
        );
        assert!(access.allows(Resource::Tables, None, Action::Read));
        assert!(access.allows(Resource::Tables, Some("orders"), Action::Read));
        assert!(!access.allows(Resource::Tables, None, Action::Write));
        assert!(access.allows(Resource::Functions, Some("hello"), Action::Read));
        assert!(access.allows(Resource::Functions, Some("hello"), Action::Write));
        assert!(!access.allows(Resource::Functions, Some("hello"), Action::Admin));
        assert!(!access.allows(Resource::Functions, Some("other"), Action::Read));
        assert!(
            !access.allows(Resource::Functions, None, Action::Read),
            "one object's grant is not a grant on all of them"
        );
        assert!(!access.allows(Resource::Collections, None, Action::Read));
        assert_eq!(access.permissions().len(), 2, "merged per (kind, object)");
        let raised = Access::from_grants(
            false,
            &[
                grant("Tables", "orders", &["Read"]),
                grant("Tables", "orders", &["Admin"]),
            ],
        );
        assert!(raised.allows(Resource::Tables, Some("orders"), Action::Admin));
        assert_eq!(raised.permissions().len(), 1);
        assert_eq!(
            access.check(Resource::Tables, None, Action::Write),
            Err("Insufficient permissions: requires Write on Tables".to_owned())
        );
    }

    #[test]
    fn sql_is_reached_through_the_grants_a_route_group_names() {
        let records: SqlGrant = "Records".parse().unwrap();
        let tables: SqlGrant = "Tables/*".parse().unwrap();
        assert_eq!(tables, SqlGrant::EVERY_TABLE);
        assert!("Records/".parse::<SqlGrant>().is_err());
        assert!("Rows".parse::<SqlGrant>().unwrap_err().contains("Records"));

        let one_table = Access::from_grants(false, &[grant("Tables", "orders", &["Admin"])]);
        assert!(one_table.holds("Tables".parse().unwrap(), Action::Admin));
        assert_eq!(
            one_table.sql_mode(&[tables]),
            Err("Insufficient permissions: requires Read on Tables".to_owned()),
            "one table's grant is not arbitrary SQL"
        );

        let reader = Access::from_grants(false, &[grant("Records", "*", &["Read"])]);
        assert_eq!(reader.sql_mode(&[records]), Ok(ReadOnly(true)));
        assert_eq!(
            reader.sql_mode(&[tables, records]),
            Ok(ReadOnly(true)),
            "any of the named grants is enough"
        );
        assert_eq!(
            reader.sql_mode(&[tables]),
            Err("Insufficient permissions: requires Read on Tables".to_owned())
        );

        let mixed = Access::from_grants(
            false,
            &[
                grant("Collections", "notes", &["Write"]),
                grant("Tables", "*", &["Read"]),
            ],
        );
        let collections: SqlGrant = "Collections".parse().unwrap();
        assert_eq!(mixed.sql_mode(&[collections, tables]), Ok(ReadOnly(false)));
        assert_eq!(mixed.sql_mode(&[tables]), Ok(ReadOnly(true)));
        assert_eq!(
            Access::none().sql_mode(&[collections, tables]),
            Err("Insufficient permissions: requires Read on Collections".to_owned())
        );
        assert_eq!(Access::admin().sql_mode(&[tables]), Ok(ReadOnly(false)));

        let vectors: SqlGrant = "Vectors".parse().unwrap();
        let vector_reader = Access::from_grants(false, &[grant("Vectors", "items", &["Read"])]);
        assert_eq!(
            vector_reader.sql_mode(&[collections, vectors, tables]),
            Ok(ReadOnly(true))
        );
        assert_eq!(
            vector_reader.written(&[collections, vectors, tables]),
            Resource::Vectors,
            "a refused write names the grant read through"
        );
        assert_eq!(
            Access::none().written(&[collections, vectors]),
            Resource::Collections
        );
    }

    #[test]
    fn admins_hold_everything_and_nobody_holds_nothing() {
        let admin = Access::from_grants(true, &[]);
        for resource in RESOURCES {
            assert!(admin.allows(resource, None, Action::Admin));
        }
        let none = Access::none();
        assert_eq!(
            none.check(Resource::Tables, None, Action::Read),
            Err("Insufficient permissions: requires Read on Tables".to_owned())
        );
    }
}
