"""What the fleet's engines consume: the node_exporter textfile, the systemd units that refresh it, the
Prometheus alert rules and node-problem-detector monitor configs shipped as package data."""
