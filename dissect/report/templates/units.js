(function(){
  /* Filter (category, concept, detectors only), sort (IoU, unit, label, category; click again to
     reverse) and a click-to-enlarge lightbox. The state lives in the URL hash, so a view can be
     bookmarked: #cat=object&q=car&det=1&sort=label-asc */
  var box=document.getElementById('units');
  var cat=document.getElementById('cat'),q=document.getElementById('q'),det=document.getElementById('det');
  var count=document.getElementById('count'),empty=document.getElementById('empty');
  var buttons=document.querySelectorAll('.sort button');
  var units=Array.prototype.slice.call(box.querySelectorAll('.unit'));
  var DEFAULT={iou:'desc',unit:'asc',label:'asc',category:'asc'};
  var sort={key:'iou',dir:'desc'};
  function val(u,k){
    if(k==='iou'){return parseFloat(u.getAttribute('data-iou'));}
    if(k==='unit'){return parseInt(u.getAttribute('data-unit'),10);}
    return (u.getAttribute('data-'+k)||'').toLowerCase();
  }
  function cmp(a,b){
    var x=val(a,sort.key),y=val(b,sort.key),r=x<y?-1:x>y?1:0;
    if(sort.dir==='desc'){r=-r;}
    if(r===0){  /* ties: best IoU first, then unit number */
      r=val(b,'iou')-val(a,'iou');if(r===0){r=val(a,'unit')-val(b,'unit');}
    }
    return r;
  }
  function state(){
    var h=[];if(cat.value){h.push('cat='+encodeURIComponent(cat.value));}
    var s=q.value.trim();if(s){h.push('q='+encodeURIComponent(s));}if(det.checked){h.push('det=1');}
    if(sort.key!=='iou'||sort.dir!=='desc'){h.push('sort='+sort.key+'-'+sort.dir);}
    if(window.history&&history.replaceState){history.replaceState(null,'',h.length?'#'+h.join('&'):location.pathname);}
  }
  function apply(){
    var c=cat.value,s=q.value.trim().toLowerCase(),d=det.checked,n=0;
    units.sort(cmp);
    for(var i=0;i<units.length;i++){
      var u=units[i];box.appendChild(u);
      var text=(u.getAttribute('data-label')+' '+u.getAttribute('data-raw')).toLowerCase();
      var ok=(!c||u.getAttribute('data-category')===c)&&(!s||text.indexOf(s)>=0)&&(!d||u.getAttribute('data-detector')==='1');
      u.hidden=!ok;if(ok){n++;}
    }
    for(var j=0;j<buttons.length;j++){
      var b=buttons[j],on=b.getAttribute('data-sort')===sort.key;
      b.setAttribute('aria-pressed',on?'true':'false');
      if(on){b.setAttribute('data-dir',sort.dir);}else{b.removeAttribute('data-dir');}
    }
    count.textContent=n+' of '+units.length+' units shown';empty.hidden=n>0;state();
  }
  for(var j=0;j<buttons.length;j++){
    buttons[j].addEventListener('click',function(){
      var k=this.getAttribute('data-sort');
      if(sort.key===k){sort.dir=sort.dir==='asc'?'desc':'asc';}else{sort.key=k;sort.dir=DEFAULT[k];}
      apply();
    });
  }
  var p=location.hash.replace(/^#/,'').split('&');
  for(var i=0;i<p.length;i++){var kv=p[i].split('=');var v=decodeURIComponent(kv[1]||'');
    if(kv[0]==='cat'){cat.value=v;}else if(kv[0]==='q'){q.value=v;}else if(kv[0]==='det'){det.checked=v==='1';}
    else if(kv[0]==='sort'){var m=v.split('-');if(DEFAULT[m[0]]&&(m[1]==='asc'||m[1]==='desc')){sort={key:m[0],dir:m[1]};}}}
  cat.addEventListener('change',apply);q.addEventListener('input',apply);det.addEventListener('change',apply);apply();

  /* the enlarged image element exists only while open: the page's image check never sees an empty one */
  var lb=document.getElementById('lightbox'),lbcap=document.getElementById('lightbox-caption');
  function close(){lb.hidden=true;var old=document.getElementById('lightbox-img');if(old){lb.removeChild(old);}}
  box.addEventListener('click',function(e){
    var t=e.target;if(!t||!t.classList||!t.classList.contains('strip')){return;}
    close();var img=document.createElement('img');img.id='lightbox-img';img.src=t.getAttribute('src');img.alt=t.alt;
    lb.insertBefore(img,lbcap);lbcap.textContent=t.getAttribute('data-caption')||t.alt;lb.hidden=false;
  });
  lb.addEventListener('click',close);
  document.addEventListener('keydown',function(e){if(e.key==='Escape'&&!lb.hidden){close();}});
})();
