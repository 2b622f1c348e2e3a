#!/usr/bin/python
# -*- coding: utf-8 -*-
# SPDX-License-Identifier: MIT
"""Ansible module: make module-provided sysctl keys survive boot with `sysctl-doctor fix`."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: sysctl_doctor
short_description: Make sysctl keys that a kernel module provides apply at boot
description:
  - Runs C(sysctl-doctor fix) on a host or an offline root. It finds the sysctl.d settings whose key only
    exists once a kernel module is loaded (for example C(net.netfilter.nf_conntrack_tcp_be_liberal)) and that
    the boot would lose, and loads the module before C(systemd-sysctl) (C(modules-load)) or re-applies its
    keys when it loads (C(udev)).
  - Unlike M(ansible.posix.sysctl) with C(ignoreerrors), a key that does not exist yet is not hidden but fixed.
  - Check mode runs C(sysctl-doctor fix --dry-run) and writes nothing; with C(--diff) each planned file is
    shown before and after.
  - The findings of C(sysctl-doctor check) after the run are returned, and set as the fact C(sysctl_doctor).
version_added: "0.1.0"
author:
  - sysctl-doctor authors
options:
  root:
    description: The root to fix, C(/) for the host itself or the directory of an offline root or image.
    type: path
    default: /
  method:
    description:
      - C(modules-load) lists the modules in C(/etc/modules-load.d/sysctl-doctor.conf) (the init system's
        equivalent elsewhere).
      - C(udev) writes C(/etc/udev/rules.d/90-sysctl-doctor.rules), re-applying the keys when the module loads.
    type: str
    choices: [modules-load, udev]
    default: modules-load
  executable:
    description: The sysctl-doctor command; found on the PATH when not given.
    type: path
requirements:
  - sysctl-doctor on the managed host (the role C(sysctl_doctor.core.sysctl_doctor) installs it)
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
notes:
  - The module fails when sysctl-doctor exits 2 (usage or I/O error, with the file:line it names).
  - Findings at error level that C(fix) cannot remove (for example a conntrack rule) do not fail the task;
    they are in RV(findings) and RV(errors_remain) is true.
"""

EXAMPLES = r"""
- name: Make module sysctl keys survive the next boot
  sysctl_doctor.core.sysctl_doctor:
    method: modules-load

- name: Fix an offline image root with udev rules
  sysctl_doctor.core.sysctl_doctor:
    root: /srv/images/node
    method: udev
"""

RETURN = r"""
edits:
  description: The files planned (and, outside check mode, written), inside the root.
  returned: always
  type: list
  elements: dict
  sample: [{"path": "/etc/modules-load.d/sysctl-doctor.conf", "before": null, "after": "nf_conntrack\n"}]
written:
  description: The files written, with the backup of each replaced file (inside the root).
  returned: always
  type: list
  elements: dict
findings:
  description: The findings of C(sysctl-doctor check --format json) after the run.
  returned: always
  type: list
  elements: dict
  sample: [{"code": "SD106", "severity": "warning", "key": "net.ipv4.ip_forward", "message": "...", "fix": "..."}]
errors_remain:
  description: Whether findings at error level remain after the run.
  returned: always
  type: bool
notes:
  description: Notes from the planner (what it could not fix and why).
  returned: always
  type: list
  elements: str
"""

import json

from ansible.module_utils.basic import AnsibleModule

EXIT_ERROR = 2


def _run(module, argv):
    rc, out, err = module.run_command(argv, environ_update={"NO_COLOR": "1"})
    if rc == EXIT_ERROR or rc not in (0, 1):
        module.fail_json(msg=(err.strip() or out.strip() or "sysctl-doctor exited %d" % rc), rc=rc,
                         cmd=" ".join(argv), stderr=err, stdout=out)
    try:
        return rc, json.loads(out)
    except ValueError:
        module.fail_json(msg="sysctl-doctor printed no JSON", rc=rc, cmd=" ".join(argv), stdout=out, stderr=err)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type="path", default="/"),
            method=dict(type="str", default="modules-load", choices=["modules-load", "udev"]),
            executable=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    tool = module.params["executable"] or module.get_bin_path("sysctl-doctor", required=True)
    root, method = module.params["root"], module.params["method"]

    fix = [tool, "fix", "--root", root, "--method", method, "--format", "json"]
    if module.check_mode:
        fix.append("--dry-run")
    dummy, plan = _run(module, fix)
    check_rc, report = _run(module, [tool, "check", "--root", root, "--format", "json"])

    edits = plan.get("edits", [])
    result = dict(
        changed=bool(edits),
        edits=edits,
        written=plan.get("written", []),
        notes=plan.get("notes", []),
        findings=report.get("findings", []),
        errors_remain=check_rc == 1,
        ansible_facts=dict(sysctl_doctor=dict(findings=report.get("findings", []), keys=report.get("keys", []))),
    )
    if module._diff and edits:
        result["diff"] = [
            dict(before_header=e["path"], after_header=e["path"], before=e["before"] or "", after=e["after"])
            for e in edits
        ]
    for note in plan.get("notes", []):
        module.warn(note)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
