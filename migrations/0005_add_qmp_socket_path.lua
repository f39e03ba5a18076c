-- Remember each VM's QMP socket so any process (CLI, scripts) can talk to a running VM.
return {
    description = "Add qmp_socket_path column for cross-process QMP",
    up = function(db)
        if not db:has_column("vm_instances", "qmp_socket_path") then
            db:exec("ALTER TABLE vm_instances ADD COLUMN qmp_socket_path TEXT")
        end
        db:exec("CREATE INDEX IF NOT EXISTS idx_vms_qmp_socket ON vm_instances(qmp_socket_path)")
    end,
}
