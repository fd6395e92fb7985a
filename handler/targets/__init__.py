"""What a scan acts on and with: the target accounts, Regions and clusters (discovery.py), the sessions and the
per-account and per-Region clients, made once (clients.py), and the EKS token (auth.py)."""
