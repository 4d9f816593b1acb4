from dagster import TableColumn, TableSchema

SEGMENT_SCHEMA = TableSchema(columns=[
    TableColumn("index", "int"),
    TableColumn("start_s", "float"),
    TableColumn("duration_s", "float"),
    TableColumn("frames", "int"),
    TableColumn("size_bytes", "int"),
])

STEREO_SEGMENT_SCHEMA = TableSchema(columns=[
    TableColumn("index", "int"),
    TableColumn("frames", "int"),
    TableColumn("wall_s", "float"),
    TableColumn("fps", "float"),
    TableColumn("depth_model", "string"),
    TableColumn("device", "string"),
    TableColumn("mean_depth", "float"),
    TableColumn("max_shift_px", "float"),
    TableColumn("depth_min", "float", description="range of the normalised depth used (0 far .. 1 near)"),
    TableColumn("depth_max", "float"),
    TableColumn("reused", "bool"),
])
