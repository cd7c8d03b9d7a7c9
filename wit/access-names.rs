// How the API spells the `session` interface's `resource` and `action` enums
// ("Tables", "Read", ...). Included with `include!` by the host
// (host/src/auth/access.rs) and the guest kit (guests/kit/src/access.rs),
// each over its own bindings of the same WIT, so the spelling lives once.
// `Resource` and `Action` are whatever the including module has in scope.

/// Every resource kind, in WIT order.
pub const RESOURCES: [Resource; 12] = [
    Resource::Tables,
    Resource::Collections,
    Resource::Vectors,
    Resource::Records,
    Resource::Functions,
    Resource::Jobs,
    Resource::Credits,
    Resource::Events,
    Resource::Organizations,
    Resource::Teams,
    Resource::Projects,
    Resource::Permissions,
];

/// Every action, lowest first: each implies the ones before it.
pub const ACTIONS: [Action; 3] = [Action::Read, Action::Write, Action::Admin];

pub fn resource_name(resource: Resource) -> &'static str {
    match resource {
        Resource::Tables => "Tables",
        Resource::Collections => "Collections",
        Resource::Vectors => "Vectors",
        Resource::Records => "Records",
        Resource::Functions => "Functions",
        Resource::Jobs => "Jobs",
        Resource::Credits => "Credits",
        Resource::Events => "Events",
        Resource::Organizations => "Organizations",
        Resource::Teams => "Teams",
        Resource::Projects => "Projects",
        Resource::Permissions => "Permissions",
    }
}

pub fn action_name(action: Action) -> &'static str {
    match action {
        Action::Read => "Read",
        Action::Write => "Write",
        Action::Admin => "Admin",
    }
}

/// A resource kind by its API name (case-sensitive).
pub fn parse_resource(name: &str) -> Option<Resource> {
    RESOURCES.into_iter().find(|r| resource_name(*r) == name)
}

/// An action by its API name (case-sensitive).
pub fn parse_action(name: &str) -> Option<Action> {
    ACTIONS.into_iter().find(|a| action_name(*a) == name)
}
