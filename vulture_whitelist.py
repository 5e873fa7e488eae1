"""Names vulture cannot see used: dataclass fields read by templates and JSON, attributes set on
library objects, signature parameters, names used only by tests and benchmarks. (Validators,
routes, CLI commands and flows are skipped by their decorators: ignore_decorators in pyproject.)
Regenerate with `.venv/bin/vulture --make-whitelist` only after removing real dead code."""

ENTITIES  # unused variable (connectors/records.py:58)
exc_type  # unused variable (connectors/sandbox/app.py:280)
tb  # unused variable (connectors/sandbox/app.py:282)
_.should_exit  # unused attribute (connectors/sandbox/app.py:284)
fetched_at  # unused variable (connectors/source.py:46)
_.__class__  # unused attribute (connectors/validate.py: the worker fast path's record)
task_run  # unused variable (flows/nightly_sync.py:72)
_.reason_counts  # unused method (geodata/cellindex.py:124)
gb2260  # unused function (geodata/codes.py:153)
china_bbox  # unused variable (geodata/crs.py:109)
gcj02_to_wgs84_approx  # unused function (geodata/crs.py:291)
province_code  # unused variable (grid/cases/policy.py:279)
level_after  # unused variable (grid/cases/queries.py:136)
responded  # unused variable (grid/cases/queries.py:242)
resolved  # unused variable (grid/cases/queries.py:243)
_.owned_by_grid_officer  # unused property (grid/cases/routing.py:98)
valid_to  # unused variable (grid/cells/imports.py:74)
rerouted_cases  # unused variable (grid/cells/imports.py:116)
cells_at  # unused function (grid/cells/imports.py:145)
_.misses  # unused attribute (grid/monitoring/choropleth.py:82)
_.misses  # unused attribute (grid/monitoring/choropleth.py:88)
_.misses  # unused attribute (grid/monitoring/choropleth.py:106)
enterprises_union  # unused variable (grid/monitoring/coverage.py:167)
workers_mapped  # unused variable (grid/monitoring/coverage.py:169)
disputes_resolved  # unused variable (grid/monitoring/coverage.py:171)
disputes_on_time  # unused variable (grid/monitoring/coverage.py:172)
hardship_helped  # unused variable (grid/monitoring/coverage.py:174)
responded_on_time  # unused variable (grid/monitoring/coverage.py:176)
resolved  # unused variable (grid/monitoring/coverage.py:177)
_.number_format  # unused attribute (grid/monitoring/exports.py:210)
_.number_format  # unused attribute (grid/monitoring/exports.py:212)
_.number_format  # unused attribute (grid/monitoring/exports.py:220)
_.number_format  # unused attribute (grid/monitoring/exports.py:228)
_.number_format  # unused attribute (grid/monitoring/exports.py:230)
_.font  # unused attribute (grid/monitoring/exports.py:257)
_.freeze_panes  # unused attribute (grid/monitoring/exports.py:259)
started_at  # unused variable (grid/sync/health.py:48)
finished_at  # unused variable (grid/sync/health.py:49)
duration_s  # unused variable (grid/sync/health.py:50)
last_ok_at  # unused variable (grid/sync/health.py:67)
age_hours  # unused variable (grid/sync/health.py:69)
_.open_total  # unused property (grid/sync/health.py:73)
colour  # unused variable (grid/sync/health.py:160)
max_total  # unused variable (grid/sync/health.py:173)
seen_count  # unused variable (grid/sync/health.py:216)
reprocess_count  # unused variable (grid/sync/health.py:217)
created_at  # unused variable (grid/sync/health.py:218)
id_masked  # unused variable (grid/sync/health.py:219)
phone_masked  # unused variable (grid/sync/health.py:220)
name_masked  # unused variable (grid/sync/health.py:221)
n_records  # unused variable (grid/sync/health.py:303)
requested_at  # unused variable (grid/sync/health.py:305)
finished_at  # unused variable (grid/sync/health.py:309)
_.autocommit  # unused attribute (grid/store/cluster.py:175)
_.autocommit  # unused attribute (grid/store/cluster.py:193)
_.autocommit  # unused attribute (grid/store/cluster.py:216)
get_cursor  # unused function (grid/sync/store.py:193)
_.itersize  # unused attribute (grid/sync/store.py:412)
load_sample_world  # unused function (grid/store/world.py:153)
csrf_token  # unused variable (grid/web/api.py:33)
is_owner  # unused variable (grid/web/api.py:76)
id_masked  # unused variable (grid/web/api.py:80)
name_masked  # unused variable (grid/web/api.py:81)
phone_masked  # unused variable (grid/web/api.py:82)
responded  # unused variable (grid/web/api.py:144)
resolved  # unused variable (grid/web/api.py:145)
id_masked  # unused variable (grid/web/casework.py:209)
name_masked  # unused variable (grid/web/casework.py:210)
phone_masked  # unused variable (grid/web/casework.py:211)
is_owner  # unused variable (grid/web/casework.py:232)
responded  # unused variable (grid/web/casework.py:476)
resolved  # unused variable (grid/web/casework.py:477)
_.known_years  # unused property (grid/workdays.py:184)
_.add_workdays_many  # unused method (grid/workdays.py:259)
_.workdays_between  # unused method (grid/workdays.py:278)
fold  # grid/cases/queries.py: the replay check of tests and bench_sweep
committed  # grid/cases/recompute.py: a result field read by the CLI and tests
resolve_seconds_left  # grid/web/api.py: JSON fields of the case list and case
respond_seconds_left
plan_reroute  # grid/cases/reroute.py: the dry-run plan of every open case, read by tests
RELATIONS  # grid/store/access.py: the classification the database-roles test walks
owner_name  # unused variable (grid/web/api.py: the API's case document)
_.shared_people  # connectors/sandbox/province.py: the cross-city people, read by tests and the simulation
officer_name  # unused variable (grid/accounts/users.py): shown by the admin page
PICK_RULE  # unused variable (grid/cases/owners.py): the documented tie-break, asserted by tests
open_cases  # unused variable (grid/cases/owners.py): the re-dispatch pick-list shows it
officers_of_units  # unused function (grid/cases/owners.py): the re-dispatch pick-list's query
case_officer  # unused function (grid/cases/owners.py): the case page's owner officer
# issue 16 part B: fields read by templates and JSON bodies, routes registered by decorator
next_attempt_at  # grid/cases/notices.py: OutboxRow, read by admin_outbox.html
last_error
delivered_via
requeued_at
requeued_by
topic_zh  # grid/web/notices.py: NoticeOut / MarkedOut JSON fields
details
marked
api_read_all  # grid/web/notices.py: API routes
api_read_one
