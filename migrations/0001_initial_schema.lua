-- Schema version 1: the layout the published Python maqet created (v0.0.1 - v0.0.12).
-- A new database starts here; a database that already has these objects is left as it is.
return {
    description = "Initial schema",
    up = function(db)
        if not db:has_table("vm_instances") then
            db:exec([[
                CREATE TABLE vm_instances (
                    id TEXT PRIMARY KEY,
                    name TEXT UNIQUE NOT NULL,
                    config_path TEXT,
                    config_data TEXT NOT NULL,
                    status TEXT NOT NULL DEFAULT 'created',
                    pid INTEGER,
                    socket_path TEXT,
                    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
                    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
                )
            ]])
        end
        db:exec("CREATE INDEX IF NOT EXISTS idx_vm_name ON vm_instances(name)")
        db:exec("CREATE INDEX IF NOT EXISTS idx_vm_status ON vm_instances(status)")
        db:exec("CREATE INDEX IF NOT EXISTS idx_vm_pid ON vm_instances(pid)")
        db:exec([[
            CREATE TRIGGER IF NOT EXISTS update_timestamp
                AFTER UPDATE ON vm_instances
            BEGIN
                UPDATE vm_instances SET updated_at = CURRENT_TIMESTAMP
                WHERE id = NEW.id;
            END
        ]])
    end,
}
