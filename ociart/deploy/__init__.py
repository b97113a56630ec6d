"""Deploy-time fetching: ``ociart fetch`` (:mod:`.fetch`) and the node-level verified cache (:mod:`.nodecache`)."""
