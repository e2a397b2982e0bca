"""How Django's own pages write moments (a change's history, a read-only timestamp field):
as the console's lists and record pages do, 2026-11-25 13:14:05 UTC, not 'Nov. 25, 2026,
1:14 p.m.'. Input formats stay Django's for English."""

DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
