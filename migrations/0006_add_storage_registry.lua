-- Track the disk images maqet created for each VM, as the published Python maqet's version 6 did.
return {
    description = "Add storage_registry table for VM disk images",
    up = function(db)
        if not db:has_table("storage_registry") then
            db:exec([[
                CREATE TABLE storage_registry (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    vm_name TEXT NOT NULL REFERENCES vm_instances(name) ON DELETE CASCADE,
                    storage_path TEXT NOT NULL,
                    storage_type TEXT NOT NULL,
                    size_bytes INTEGER,
                    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
                    last_verified TIMESTAMP,
                    UNIQUE(vm_name, storage_path)
                )
            ]])
        end
        db:exec("CREATE INDEX IF NOT EXISTS idx_storage_vm ON storage_registry(vm_name)")
        db:exec("CREATE INDEX IF NOT EXISTS idx_storage_path ON storage_registry(storage_path)")
    end,
}
