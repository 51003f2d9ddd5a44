"""HTTP routers, one per resource; each route parses, calls one service function, returns a schema."""
