"""Teams service: administrative units, teams, members and their training."""
