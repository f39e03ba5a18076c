-- Remember the snapshots maqet took of each VM: which disks hold them, whether the VM's state
-- (RAM, devices) was saved too, and when. The disks themselves stay the truth (`maqet snapshot
-- list` compares the two); a VM's records go with its row (ON DELETE CASCADE).
return {
    description = "Add vm_snapshots table for VM snapshots",
    up = function(db)
        if not db:has_table("vm_snapshots") then
            db:exec([[
                CREATE TABLE vm_snapshots (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    vm_id TEXT NOT NULL REFERENCES vm_instances(id) ON DELETE CASCADE,
                    name TEXT NOT NULL,
                    live INTEGER NOT NULL DEFAULT 0 CHECK (live IN (0, 1)),
                    disks TEXT NOT NULL DEFAULT '[]',
                    vm_state_size INTEGER,
                    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
                    UNIQUE(vm_id, name)
                )
            ]])
        end
    end,
}
