-- 011_vram_mib: every memory figure in MiB.
-- Until now the NVML backend stored NVML's bytes / 1e6 (decimal MB) and the nvidia-smi
-- importer turned MiB into decimal MB, while simulated boards, the allocator's figures
-- (capacity, weights, reserved, peak allocated, largest allocatable) and TR122 packs were
-- MiB: on an H100 the two capacity figures of one report differed by 4.9 %. fleetphysics
-- now converts NVML's bytes to MiB once (agents/nvml.py) and keeps nvidia-smi's MiB; this
-- converts the decimal-MB values already stored: what NVML read for non-simulated devices
-- ingested from artifacts or Arrow, and nvidia-smi imports. Column names keep _mb for now.

UPDATE power_trace SET vram_used_mb = vram_used_mb * 1000000 / 1048576
WHERE vram_used_mb IS NOT NULL
  AND trace_key IN (SELECT trace_key FROM run_devices
                    WHERE NOT simulated AND source IN ('artifact', 'arrow', 'nvidia-smi'));

UPDATE vram_cliff_probes SET nvml_used_mb = nvml_used_mb * 1000000 / 1048576
WHERE nvml_used_mb IS NOT NULL
  AND EXISTS (SELECT 1 FROM run_devices rd
              WHERE rd.run_id = vram_cliff_probes.run_id AND rd.device_uid = vram_cliff_probes.device_uid
                AND NOT rd.simulated AND rd.source IN ('artifact', 'arrow'));

UPDATE vram_cliff_points SET nvml_used_mb = nvml_used_mb * 1000000 / 1048576
WHERE nvml_used_mb IS NOT NULL
  AND EXISTS (SELECT 1 FROM run_devices rd
              WHERE rd.run_id = vram_cliff_points.run_id AND rd.device_uid = vram_cliff_points.device_uid
                AND NOT rd.simulated AND rd.source IN ('artifact', 'arrow'));

UPDATE devices SET vram_total_mb = vram_total_mb * 1000000 / 1048576
WHERE vram_total_mb IS NOT NULL AND NOT simulated
  AND device_uid IN (SELECT device_uid FROM run_devices WHERE source IN ('artifact', 'arrow'));

UPDATE fingerprints SET vram_total_mb = vram_total_mb * 1000000 / 1048576
WHERE vram_total_mb IS NOT NULL AND NOT simulated
  AND device_uid IN (SELECT device_uid FROM run_devices WHERE source IN ('artifact', 'arrow'));
