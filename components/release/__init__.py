"""The weekly release job: embed new tracks with the pushed model, pick users per track and a per-user inbox, report."""
