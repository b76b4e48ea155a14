// The @cap-sys-boot rewrite as a Coccinelle semantic patch, for benchmarks/patch_sweep.py:
// the same change as lxcpatch's recipe for its two logging families (SYSERROR-style macros
// and LXC 0.5's lxc_log_syserror). lxcpatch also adds the PR_CAPBSET_READ fallback #define.

@macros@
position p;
@@
  if@p (prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0)) { ... SYSERROR(...); ... }

@depends on macros@
position macros.p;
statement list SL;
@@
  if@p (prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0))
- { SL }
+ {
+   if (prctl(PR_CAPBSET_READ, CAP_SYS_BOOT, 0, 0, 0) == 0) {
+     INFO("lxcpatch:cap-sys-boot-tolerated: CAP_SYS_BOOT is already absent from the bounding set; continuing");
+   } else {
+     SL
+   }
+ }

@lxc_log@
position p;
@@
  if@p (prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0)) { ... lxc_log_syserror(...); ... }

@depends on lxc_log@
position lxc_log.p;
statement list SL;
@@
  if@p (prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0))
- { SL }
+ {
+   if (prctl(PR_CAPBSET_READ, CAP_SYS_BOOT, 0, 0, 0) == 0) {
+     lxc_log_info("lxcpatch:cap-sys-boot-tolerated: CAP_SYS_BOOT is already absent from the bounding set; continuing");
+   } else {
+     SL
+   }
+ }
