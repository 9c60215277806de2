"""HTTP plumbing shared by every context: routes with access rules, problem+json, OpenAPI, middleware."""
