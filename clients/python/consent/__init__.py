"""Generated protobuf code for the ``consent`` proto packages (see proto/)."""
