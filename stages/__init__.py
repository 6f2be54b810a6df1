"""DVC stage commands: thin click wrappers over otpc.study."""
