"""Runs ironic-python-agent 13.0.0 itself (its `ironic-python-agent` entry point: lookup,
heartbeats, command API, deploy steps) as the reference agent of `tests/deploy-bench.sh`.

usage: ipa_agent.py --api-url URL --device /dev/loopN --log-file FILE --state-dir DIR

The benchmark runs it in the test's network namespace on this machine, which is not a
ramdisk. A bench hardware manager (the only one loaded) confines IPA to what the test made
and keeps it off the host:

- block devices: only DEVICE (a loop device the benchmark created), which is also the
  install device; IPA's generic manager would list the host's disks;
- network interfaces: the namespace's interfaces (a veth has no /sys/class/net/X/device, so
  the generic manager would list none and lookup would have no MAC);
- `initialize` does nothing: the generic one loads kernel modules, assembles md arrays and
  starts multipath on the host;
- in-band power off and reboot raise: IPA's fallback writes to /proc/sysrq-trigger. The
  benchmark sets the node's `deploy_forces_oob_reboot`, so Ironic syncs and powers the node
  off through its fake power interface and never asks;
- the virtual-media config copy is skipped (it would mount host devices).

Two disk helpers are replaced, as in ipa_driver.py: there is no udevd to settle, and `fuser`
(behind wait_for_disk_to_become_available) cannot read other processes' fds here, which IPA
would take for a busy disk. Everything else is IPA's real code and real tools.
"""
import argparse
import os
import sys


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--api-url', required=True)
    parser.add_argument('--device', required=True)
    parser.add_argument('--log-file', required=True)
    parser.add_argument('--state-dir', required=True)
    args = parser.parse_args()
    device = os.path.realpath(args.device)
    if not os.path.basename(device).startswith('loop'):
        sys.exit(f'ipa_agent.py: refusing {device}: the benchmark gives IPA loop devices only')

    # The entry point's module first: importing it registers IPA's options, which the
    # modules below read at import.
    from ironic_python_agent.cmd import agent
    from ironic_python_agent import disk_utils
    from ironic_python_agent import errors
    from ironic_python_agent import hardware
    from ironic_python_agent import utils
    from ironic_python_agent.extensions import standby

    class BenchHardwareManager(hardware.GenericHardwareManager):
        def evaluate_hardware_support(self):
            return hardware.HardwareSupport.SERVICE_PROVIDER

        def initialize(self):
            pass

        def wait_for_disks(self):
            pass

        def list_network_interfaces(self):
            names = sorted(n for n in os.listdir('/sys/class/net') if n != 'lo')
            return [self.get_interface_info(n) for n in names]

        def list_block_devices(self, include_partitions=False, all_serial_and_wwn=False):
            with open(f'/sys/class/block/{os.path.basename(device)}/size') as f:
                size = int(f.read()) * 512
            return [hardware.BlockDevice(name=device, model='bench loop disk', size=size,
                                         rotational=False, vendor='bench',
                                         serial='bench-' + os.path.basename(device))]

        def get_os_install_device(self, permit_refresh=False):
            return device

        def get_bmc_address(self):
            return None

        def get_bmc_v6address(self):
            return None

        def get_bmc_mac(self):
            return None

    class Extension:
        obj = BenchHardwareManager()
        entry_point_target = 'ipa_agent:BenchHardwareManager'

    def no_in_band_power(self, command):
        raise errors.SystemRebootError(
            -1, f'{command} refused: this is the benchmark host, not a ramdisk')

    hardware._get_extensions = lambda: [Extension()]
    standby.StandbyExtension._run_shutdown_command = no_in_band_power
    utils.copy_config_from_vmedia = lambda: None
    disk_utils.udev_settle = lambda: True
    disk_utils.wait_for_disk_to_become_available = lambda device: None

    conf = os.path.join(args.state_dir, 'ipa.conf')
    with open(conf, 'w') as f:
        f.write('[DEFAULT]\n'
                f'api_url = {args.api_url}\n'
                'lookup_timeout = 300\n'
                'debug = True\n'
                f'log_file = {args.log_file}\n')
    sys.argv = ['ironic-python-agent', '--config-file', conf]
    agent.run()


if __name__ == '__main__':
    main()
