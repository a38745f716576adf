-- The embedded decision log keeps one secondary index (by Mission) besides its primary key:
-- every decision writes every index entry on the decision log writer's turn, and the
-- Mandate and agent indexes cost about twice the row itself (bench/README.md, "The decision
-- log"). A search by Mandate also narrows by the Mandate's Mission when the service knows it
-- (and uses this index); a search by agent alone reads the time range it is given in order
-- (docs/evidence.md). PostgreSQL keeps all three indexes: their cost is paid by the database
-- server, not by the service's decision path.

DROP INDEX decision_log_mandate;
DROP INDEX decision_log_agent;
