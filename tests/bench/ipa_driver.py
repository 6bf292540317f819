"""Runs ironic-python-agent 13.0.0's own image-writing code on one image, for the benchmark.

usage: ipa_driver.py raw|qcow2 URL SHA256 DEVICE IMAGE_ID

raw   -> StandbyExtension._stream_raw_image_onto_device, what prepare_image runs for
         stream_raw_images with disk_format raw;
qcow2 -> StandbyExtension._cache_and_write_image: download to the temp dir, then format
         inspection and `qemu-img convert` onto the device.

Two functions are replaced because this machine is not a ramdisk: there is no udevd to settle,
and `fuser` (behind wait_for_disk_to_become_available) cannot read other processes' fds here,
which IPA would take for a busy disk. Everything else is IPA's real code and real tools,
acting on DEVICE only (a loop device the benchmark created).

Prints one line: RESULT {json}.
"""
import json
import os
import resource
import sys
import time
from unittest import mock


def main():
    mode, url, digest, device, image_id = sys.argv[1:6]
    from oslo_config import cfg
    from ironic_python_agent import config

    config.populate_config()
    cfg.CONF(args=[], project='ironic-python-agent')
    cfg.CONF.set_override('image_download_connection_retries', 0)

    from ironic_python_agent import disk_utils
    from ironic_python_agent.extensions import standby

    info = {
        'id': image_id,
        'urls': [url],
        'os_hash_algo': 'sha256',
        'os_hash_value': digest,
        'disk_format': 'raw' if mode == 'raw' else 'qcow2',
        'stream_raw_images': mode == 'raw',
    }
    ext = standby.StandbyExtension()
    ext.partition_uuids = {}
    started = time.perf_counter()
    with mock.patch.object(disk_utils, 'udev_settle', return_value=True), \
            mock.patch.object(disk_utils, 'wait_for_disk_to_become_available',
                              return_value=None):
        if mode == 'raw':
            ext._stream_raw_image_onto_device(info, device)
        else:
            ext._cache_and_write_image(info, device)
    wall = time.perf_counter() - started
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    # ru_maxrss of this process would include the peak of the process that spawned it
    # (posix_spawn shares its memory until exec); VmHWM is this process's own peak.
    with open('/proc/self/status') as status:
        own_peak_kib = next(int(line.split()[1]) for line in status
                            if line.startswith('VmHWM:'))
    cached = os.path.join('/tmp', image_id)
    temp_bytes = os.path.getsize(cached) if os.path.exists(cached) else 0
    if os.path.exists(cached):
        os.unlink(cached)
    print('RESULT ' + json.dumps({
        'wall_s': wall,
        'cpu_s': me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
        'max_rss_kib': max(own_peak_kib, kids.ru_maxrss),
        'temp_file_bytes': temp_bytes,
    }), flush=True)


if __name__ == '__main__':
    main()
