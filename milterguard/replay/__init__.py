"""The MTA side of the milter protocol, for replaying message files through a running milter."""
